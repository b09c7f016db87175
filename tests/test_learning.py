"""CRO learns on two ranks with every caption group split across them, the ranks launched as two
machines on one host (tests/test_gpu.py launches configs/accelerate/multinode.yaml the same way on two
GPUs). The single-rank learning run, exactly as `make demo` runs it, is tests/test_train.py's; the
controls are tests/test_control.py's.

The reasoner here is the reader served by a real vLLM OpenAI-compatible server (CPU), shared by the
ranks. Thresholds: those of tests/test_train.py (racro_trl.toy.colour_task.learned): reward, every colour's
reward and the share of well-formed captions over the last 5 steps. Measured on 2 cores: see BENCHMARKS.md.
"""

import pytest

from helpers import (
    TWO_RANKS,
    assert_learned,
    assert_rewards_follow_ranks,
    colour_launch,
    logged_steps,
    two_machines,
)

pytestmark = pytest.mark.slow


def test_two_ranks_learn_with_groups_split_across_ranks(colour_models, colour_data, reader_server, tmp_path):
    """The DDP config launched as two machines on this host (README's multi-node commands, one CPU
    process each): groups split across the machines' ranks, and still the reward climbs."""
    out = tmp_path / "ddp"
    served = ("--use_cpu", "true", "--reasoner_backend", "openai", "--reasoner_url", reader_server)
    logs = two_machines(
        lambda machine: colour_launch(
            colour_models,
            colour_data,
            out,
            "--save_strategy",
            "no",
            "--reasoner_model",
            "tiny-reader",
            *served,
            *TWO_RANKS,
            num_processes=2,
            launcher=machine,
        ),  # fmt: skip
        tmp_path,
    )
    assert "(rank 1)" in logs[1] and "(rank 1)" not in logs[0], "machine 1 ran the second rank"
    # Transformers samples, a server reasons: the ranks started without importing vLLM (keep_vllm_out).
    assert "this run uses no vLLM: it was not imported" in logs[0]
    steps = logged_steps(out)
    assert_learned(out)
    # Each rank scored 16 of a step's 32 captions (2 of each group of 4).
    assert_rewards_follow_ranks(out, steps, 32)


def test_shipped_colour_task_is_reproducible(colour_data, tmp_path):
    """data/colour is what `racro make-sample-data --task colour` writes: balanced, image-only answers."""
    import datasets

    from racro_trl.data.training_data import build_sample_dataset

    rebuilt = datasets.load_dataset(
        "parquet", data_files=str(build_sample_dataset(tmp_path, 64, task="colour"))
    )
    shipped = datasets.load_dataset("parquet", data_files=str(colour_data / "train.parquet"))
    assert rebuilt["train"].to_list() == shipped["train"].to_list()
    rows = shipped["train"]
    assert len(set(rows["question"])) == 1, "the question never tells the answer"
    assert sorted(set(rows["answer"])) == ["blue", "green", "red", "yellow"]
    assert all(rows["answer"].count(c) == 16 for c in set(rows["answer"]))

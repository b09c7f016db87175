"""CRO learns on two ranks with every caption group split across them. The single-rank learning run,
exactly as `make demo` runs it, is tests/test_train.py's; the controls are tests/test_control.py's.

The reasoner here is the reader served by a real vLLM OpenAI-compatible server (CPU), shared by the
ranks. Thresholds: the mean reward of the last 5 logged steps >= 0.7 and >= 0.4 above the first 5.
Measured on 2 cores: see BENCHMARKS.md.
"""

import json

import pytest

from conftest import TWO_RANKS, assert_learned, served_colour_run

pytestmark = pytest.mark.slow


def test_two_ranks_learn_with_groups_split_across_ranks(colour_models, colour_data, reader_server, tmp_path):
    out = tmp_path / "ddp"
    steps = served_colour_run(colour_models, colour_data, reader_server, out, *TWO_RANKS, num_processes=2)
    assert_learned(steps)
    # Each rank scored 16 of a step's 32 captions (2 of each group of 4), and TRL's logged reward is
    # the mean of all 32: the gather pairs every rank's rewards with its own captions.
    ranks = [
        [json.loads(line) for line in (out / "audit" / f"caption_reasoner-rank{rank}.jsonl").open()]
        for rank in (0, 1)
    ]
    for h in steps:
        step = [[r for r in records if r["step"] == h["step"] - 1] for records in ranks]
        assert [len(s) for s in step] == [16, 16]
        assert h["reward"] == pytest.approx(sum(r["reward"] for s in step for r in s) / 32, abs=1e-6)


def test_shipped_colour_task_is_reproducible(colour_data, tmp_path):
    """data/colour is what `racro make-sample-data --task colour` writes: balanced, image-only answers."""
    import datasets

    from racro_trl.data import build_sample_dataset

    rebuilt = datasets.load_dataset(
        "parquet", data_files=str(build_sample_dataset(tmp_path, 64, task="colour"))
    )
    shipped = datasets.load_dataset("parquet", data_files=str(colour_data / "train.parquet"))
    assert rebuilt["train"].to_list() == shipped["train"].to_list()
    rows = shipped["train"]
    assert len(set(rows["question"])) == 1, "the question never tells the answer"
    assert sorted(set(rows["answer"])) == ["blue", "green", "red", "yellow"]
    assert all(rows["answer"].count(c) == 16 for c in set(rows["answer"]))

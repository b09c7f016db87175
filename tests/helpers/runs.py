"""What a finished training run left: its logged steps, its audit records, and the checks on them."""

from __future__ import annotations

import json
import os

import pytest

from .launch import colour_launch, run_logged

# The colour task's recipe: 100 logged steps of 32 captions.
STEPS, CAPTIONS = 100, 32


def logged_steps(output_dir) -> list[dict]:
    """The logged training steps (those with a reward) of a finished run."""
    from racro_trl.reporting.run_summary import load_log_history

    return [h for h in load_log_history(output_dir) if "reward" in h]


def assert_learned(output_dir) -> None:
    """The learning thresholds (:func:`racro_trl.toy.colour_task.learned`): over the last 5 steps, mean reward
    >= 0.8 and >= 0.4 above the first 5's, every colour's reward >= 0.6, and >= 90% of the captions
    well-formed (the reader's grammar). The grid of seeds, thread counts and model builds they were set on
    is in BENCHMARKS.md."""
    from racro_trl.toy.colour_task import verdict

    judged = verdict(output_dir)
    rewards = [round(h["reward"], 3) for h in judged["steps"]]
    assert len(judged["steps"]) == STEPS, rewards
    assert not judged["misses"], (judged["misses"], rewards, judged["late"])


def audit(output_dir) -> list[dict]:
    """Every audit record (one per scored caption) of a run, all ranks."""
    return [json.loads(line) for f in sorted((output_dir / "audit").glob("*.jsonl")) for line in f.open()]


def assert_rewards_follow_ranks(output_dir, steps: list[dict], per_step: int) -> None:
    """Each rank scored half of every step's captions, and TRL's logged reward is the mean of all of
    them: the gather pairs every rank's rewards with its own captions."""
    ranks = [
        [json.loads(line) for line in (output_dir / "audit" / f"caption_reasoner-rank{rank}.jsonl").open()]
        for rank in (0, 1)
    ]
    for h in steps:
        step = [[r for r in records if r["step"] == h["step"] - 1] for records in ranks]
        assert [len(s) for s in step] == [per_step // 2] * 2
        assert h["reward"] == pytest.approx(sum(r["reward"] for s in step for r in s) / per_step, abs=1e-6)


def served_colour_run(colour_models, colour_data, reader_server, out, *extra, num_processes=1) -> list[dict]:
    """The colour task run with the reader served by ``reader_server``; returns the logged steps."""
    served = ("--use_cpu", "true", "--reasoner_backend", "openai", "--reasoner_url", reader_server)
    command = colour_launch(
        colour_models, colour_data, out, "--save_strategy", "no", "--reasoner_model", "tiny-reader", *served,
        *extra, num_processes=num_processes,
    )  # fmt: skip
    code, log = run_logged(
        command, out.with_suffix(".log"), timeout=600, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    )
    assert code == 0, log[-6000:]
    return logged_steps(out)

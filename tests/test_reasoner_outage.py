"""A reasoner outage costs a score, not a run: failed requests score 0 and are counted, 4xx answers
are final and explained once, the run stops naming the URL only past reasoner_max_failed_fraction,
and on two ranks every rank finishes every step. The reasoner is a real local HTTP server that fails,
stalls or rejects chosen requests (tests/reasoner_standin.py), reached through the openai client."""

import json
import logging

import pytest
from reasoner_standin import ReasonerStandIn

from helpers import logged_steps, run_logged, tiny_launch
from racro_trl.reasoning.reasoners import OpenAIReasoner, ReasonerError, Sampling
from racro_trl.training.rewards import CaptionReward

QUESTION = "What colour is the shape?"


def caption_reward(url: str, tmp_path, **kwargs) -> CaptionReward:
    # 1.5 s per request (a stalled first attempt takes 4 s), 2 retries
    reasoner = OpenAIReasoner(url, timeout=1.5, max_retries=2)
    return CaptionReward(reasoner, sampling=Sampling(max_tokens=8), audit_dir=tmp_path, **kwargs)


def test_failed_requests_score_zero_and_are_counted(tmp_path, caplog):
    captions = [
        "The square is red.", "The circle is blue. [reject]", "The star is green. [down]", "The box is blue. [flaky]",
        "The dot is red. [stall]", "The disc is green. [reject]", "The ring is yellow.", "The line is red.",
    ]  # fmt: skip
    gold = ["red", "blue", "green", "blue", "red", "green", "yellow", "blue"]
    metrics = {}
    with (
        ReasonerStandIn(stall=4.0) as standin,
        caplog.at_level(logging.WARNING, "racro_trl.training.rewards"),
    ):
        reward = caption_reward(standin.url, tmp_path)
        rewards = reward(None, captions, question=[QUESTION] * 8, answer=gold, log_metric=metrics.__setitem__)
    # The answers that came (flaky and stalled ones after a retry) are graded; the others score 0.
    assert rewards == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert metrics["caption_reasoner/failed"] == 3 / 8 and metrics["caption_reasoner/failed_total"] == 3
    # Nothing lost: every caption has its record, the failed ones with the reason.
    records = [json.loads(line) for line in (tmp_path / "caption_reasoner-rank0.jsonl").open()]
    assert [r["caption"] for r in records] == captions
    failed = {r["caption"]: r["failed"] for r in records if r["failed"]}
    assert sorted(failed) == sorted(c for c in captions if "[reject]" in c or "[down]" in c)
    assert all(" 400" in failed[c] for c in failed if "[reject]" in c)
    assert " 500" in failed["The star is green. [down]"]
    # 4xx answers are final; 5xx answers and timeouts are retried (1 + 2 attempts at most).
    attempts = {c: standin.attempts[c] for c in captions}
    assert attempts == {c: 1 for c in captions} | {
        "The star is green. [down]": 3, "The box is blue. [flaky]": 2, "The dot is red. [stall]": 2
    }  # fmt: skip
    # Each kind of failure is explained once in the log.
    explained = [r.getMessage() for r in caplog.records if "failed for good" in r.getMessage()]
    assert len(explained) == 2 and sum("4xx answers are final" in m for m in explained) == 1


def test_past_the_bound_the_run_stops_naming_the_url(tmp_path):
    captions = [
        "The square is red.",
        "The circle is red. [down]",
        "The star is red. [reject]",
        "The dot is red.",
    ]
    with ReasonerStandIn() as standin:
        reward = caption_reward(standin.url, tmp_path, max_failed_fraction=0.25)
        with pytest.raises(ReasonerError, match=rf"2 of 4 captions .* at {standin.url}"):
            reward(None, captions, question=[QUESTION] * 4, answer=["red"] * 4)


@pytest.mark.slow
def test_two_ranks_finish_every_step_through_an_outage(tiny_models, tmp_path):
    """2 ranks, a fifth of the captions' requests failing for good: the run ends, every step is logged,
    and the logged total and the audit both count exactly what the server refused."""
    out = tmp_path / "run"
    with ReasonerStandIn(down_share=0.2) as standin:
        command = tiny_launch(
            "configs/accelerate/ddp.yaml", tiny_models, out, "--max_steps", "3", "--save_strategy", "no",
            "--reasoner_backend", "openai", "--reasoner_url", standin.url, "--reasoner_model", "standin-reader",
            "--reasoner_max_retries", "1", "--reasoner_max_failed_fraction", "0.9", "--reward_audit_captions", "-1",
            "--use_cpu", "true",
            num_processes=2, launcher=("--mixed_precision", "no"),
        )  # fmt: skip
        code, log = run_logged(command, tmp_path / "run.log", timeout=400)
    assert code == 0, log[-5000:]
    steps = logged_steps(out)
    assert len(steps) == 3
    refused = sum(status == 500 for _, status in standin.statuses) // 2  # 1 + 1 retry per failed caption
    assert refused > 0, "the stand-in failed no request: nothing was tested"
    assert steps[-1]["caption_reasoner/failed_total"] == refused
    # one call per step: the last logged total is the run's; both ranks' audits hold every caption
    records = [json.loads(line) for f in sorted((out / "audit").glob("*.jsonl")) for line in f.open()]
    assert len(records) == 3 * 16 and {r["rank"] for r in records} == {0, 1}
    assert sum(bool(r["failed"]) for r in records) == refused


def test_a_wrong_served_model_name_fails_at_once_naming_what_is_served():
    with (
        ReasonerStandIn() as standin,
        pytest.raises(ReasonerError, match=r"serves \['standin-reader'\], not 'tiny'"),
    ):
        OpenAIReasoner(standin.url, "tiny")

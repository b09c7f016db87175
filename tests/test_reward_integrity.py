"""The reward stays honest: grading on labelled R1-style outputs, the strict grader is mathruler's
verdict exactly, captions that give the answer away are caught, logged, flagged and penalised on
request, the caption-gain reward scores each prompt blind once, and the audit is bounded and read
back in constant memory. The reasoner is a real local HTTP server (tests/reasoner_standin.py)."""

import json
import sys
from pathlib import Path

import pytest
from reasoner_standin import ReasonerStandIn

from helpers import PYTHON, run_logged
from racro_trl.reasoning.grading import GRADERS, caption_leak, parse_choices
from racro_trl.reasoning.reasoners import Answers, OpenAIReasoner, Sampling
from racro_trl.training.rewards import CaptionReward, caption_leak_penalty

DATA = Path(__file__).parent / "data"


def labelled(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).open()]


def test_default_grader_agrees_with_the_labels():
    """>= 98% on R1-style outputs: units in \\text{}, currency, intervals against inequalities, "x=2 or
    x=3" against "2, 3", option text against letter both ways, thinking cut off with a box inside."""
    cases = labelled("grading_labelled.jsonl")
    verdicts = {
        name: [
            grade(c["output"], c["gold"], parse_choices(c["question"]), c["truncated"])[1] == c["label"]
            for c in cases
        ]
        for name, grade in GRADERS.items()
    }
    accuracy = {name: sum(v) / len(v) for name, v in verdicts.items()}
    print(f"grading accuracy on {len(cases)} labelled outputs: {accuracy}")
    wrong = [c for c, ok in zip(cases, verdicts["default"], strict=True) if not ok]
    assert accuracy["default"] >= 0.98, wrong
    assert {c["case"] for c in cases} >= {"units", "currency", "interval", "or-list", "choice", "think"}


def test_strict_grader_is_mathrulers_verdict():
    from mathruler.grader import extract_boxed_content, grade_answer

    for c in labelled("grading_labelled.jsonl"):
        expected = float(grade_answer(extract_boxed_content(c["output"]), c["gold"]))
        assert GRADERS["strict"](c["output"], c["gold"], parse_choices(c["question"]))[1] == expected, c


def test_leak_detector_on_labelled_captions():
    """No false alarm on captions that state facts of the figure; most give-aways caught."""
    cases = labelled("leak_labelled.jsonl")
    found = [caption_leak(c["caption"], c["gold"], parse_choices(c["question"])) for c in cases]
    tp = sum(f and c["leak"] for f, c in zip(found, cases, strict=True))
    fp = sum(f and not c["leak"] for f, c in zip(found, cases, strict=True))
    fn = sum(not f and c["leak"] for f, c in zip(found, cases, strict=True))
    print(
        f"caption_leak on {len(cases)} labelled captions: precision {tp / (tp + fp):.3f}, recall {tp / (tp + fn):.3f}"
    )
    assert fp == 0 and tp / (tp + fn) >= 0.8


QUESTION = "Which colour is the shape? (hint: red)"
BLIND = "Which colour is the shape?"


def test_leaks_are_logged_flagged_and_penalised(tmp_path):
    captions = [
        "The square is red.", "The square is red. The answer is red.", "The circle is blue.",
        "A blue circle, \\boxed{blue}. It is blue.", "The star is green. Final answer: blue", "The dot is yellow.",
    ]  # fmt: skip
    gold = ["red", "red", "blue", "blue", "green", "yellow"]
    leaks = [False, True, False, True, False, False]  # "Final answer: blue" states a wrong answer
    metrics = {}
    with ReasonerStandIn() as standin:
        reward = CaptionReward(
            OpenAIReasoner(standin.url), sampling=Sampling(max_tokens=8), audit_dir=tmp_path
        )
        reward(None, captions, question=[BLIND] * 6, answer=gold, log_metric=metrics.__setitem__)
    assert metrics["caption_reasoner/caption_leak"] == pytest.approx(2 / 6)
    records = [json.loads(line) for line in (tmp_path / "caption_reasoner-rank0.jsonl").open()]
    assert [r["leak"] for r in records] == leaks
    assert caption_leak_penalty(captions, [BLIND] * 6, gold) == [-1.0 if x else 0.0 for x in leaks]
    from racro_trl.reporting.run_summary import audit_summary

    summary = audit_summary(tmp_path)
    assert "leaks: 2 audited captions" in summary and "The answer is red." in summary


def test_caption_gain_scores_each_prompt_blind_once(tmp_path):
    """Reward = accuracy with the caption - blind accuracy; the blind answers are asked once per prompt
    and kept in a file, so a resumed run asks none again."""
    questions = [QUESTION] * 4 + [BLIND] * 4  # the first prompt is solved blind (its hint), the second not
    gold = ["red"] * 4 + ["blue"] * 4
    captions = [
        "It is red.",
        "It is blue.",
        "It is red.",
        "It is red.",
        "It is blue.",
        "It is blue.",
        "It is red.",
        "It is blue.",
    ]
    cache = tmp_path / "blind.jsonl"
    metrics = {}
    with ReasonerStandIn() as standin:
        reasoner = OpenAIReasoner(standin.url)
        reward = CaptionReward(
            reasoner, sampling=Sampling(max_tokens=8), blind_samples=2, blind_cache=cache, name="caption_gain"
        )
        rewards = reward(None, captions, question=questions, answer=gold, log_metric=metrics.__setitem__)
        assert rewards == [0.0, -1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
        assert metrics["caption_gain/blind_accuracy"] == 0.5
        assert metrics["caption_gain/language_shortcut_rate"] == 0.5
        assert metrics["caption_gain/accuracy"] == pytest.approx(6 / 8)
        blind_requests = sum(n for c, n in standin.attempts.items() if "caption" not in c and "Question" in c)
        assert blind_requests == 2
        reward(None, captions, question=questions, answer=gold)
        resumed = CaptionReward(reasoner, sampling=Sampling(max_tokens=8), blind_samples=2, blind_cache=cache)
        assert resumed(None, captions, question=questions, answer=gold) == rewards
        assert sum(n for c, n in standin.attempts.items() if "caption" not in c and "Question" in c) == 2


def test_audit_keeps_its_share_of_each_step_and_every_flagged_caption(tmp_path):
    captions = [f"The shape is red, number {i}." for i in range(8)]
    captions[6] = "The shape is red. The answer is red."  # a leak past the share: kept, flagged
    with ReasonerStandIn() as standin:
        reward = CaptionReward(
            OpenAIReasoner(standin.url), sampling=Sampling(max_tokens=8), audit_dir=tmp_path, audit_captions=3
        )

        class State:
            global_step = 0

        for step in (0, 0, 1):  # two reward calls in step 0, one in step 1
            State.global_step = step
            reward(None, captions, question=[BLIND] * 8, answer=["red"] * 8, trainer_state=State)
    records = [json.loads(line) for line in (tmp_path / "caption_reasoner-rank0.jsonl").open()]
    kept = [(r["step"], r["call"], r["index"]) for r in records]
    # step 0: the first 3 captions of call 1, the leak of call 1 (flagged) and of call 2 (flagged)
    assert kept == [
        (0, 1, 0),
        (0, 1, 1),
        (0, 1, 2),
        (0, 1, 6),
        (0, 2, 6),
        (1, 3, 0),
        (1, 3, 1),
        (1, 3, 2),
        (1, 3, 6),
    ]
    # each caption is stored once per record: not repeated inside a stored reasoner prompt
    assert all(json.dumps(r).count("number 0") <= 1 for r in records)


class LongAnswers:
    """A reasoner that answers every caption with the same ~33 KB text: an 8192-token R1 answer at ~4
    characters a token (the audit's size is what is measured here, not the reasoner)."""

    name = "long-answers"
    ANSWER = "Wait, let me recount the bars. " * 1100 + "\\boxed{12}"

    def generate(self, chats, n, sampling, *, partial=False):
        return Answers([[self.ANSWER] * n for _ in chats], [[False] * n for _ in chats])


def test_audit_default_stays_under_its_stated_size(tmp_path):
    """The default (16 records a step over all ranks) keeps 1000 steps of 8192-token answers and 1000-token
    captions under 0.7 GB: the reward's own audit writer, on 128 such captions a step for 3 steps."""
    import types

    from racro_trl.training.configs import CROScriptArguments

    per_step = CROScriptArguments().reward_audit_captions
    reward = CaptionReward(
        LongAnswers(), num_samples=1, sampling=Sampling(max_tokens=8192), audit_dir=tmp_path,
        audit_captions=per_step,
    )  # fmt: skip
    captions = [[{"role": "assistant", "content": f"{i:04d} " + "C" * 3995}] for i in range(128)]  # 4 KB each
    for step in range(3):
        reward(
            None, captions, question=["Q" * 600] * 128, answer=["12"] * 128,
            trainer_state=types.SimpleNamespace(global_step=step),
        )  # fmt: skip
    audit = tmp_path / "caption_reasoner-rank0.jsonl"
    records = [json.loads(line) for line in audit.open()]
    assert [r["step"] for r in records] == [s for s in range(3) for _ in range(per_step)]
    assert all(r["reasoner_outputs"] == [LongAnswers.ANSWER] and r["reward"] == 1.0 for r in records)
    size = 1000 * audit.stat().st_size / 3
    print(f"audit of 1000 steps x {per_step} records of {audit.stat().st_size / len(records) / 1e3:.1f} KB: "
          f"{size / 1e9:.2f} GB")  # fmt: skip
    assert per_step == 16 and size < 0.7e9


@pytest.mark.slow
def test_report_reads_a_1gb_audit_in_constant_memory(tmp_path):
    """`racro report` on a 1.1 GB audit (34,000 records of 32 KB) peaks far below the audit's size."""
    out = tmp_path / "run"
    (out / "audit").mkdir(parents=True)
    (out / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "reward": 0.5}]}))
    answer = "Counting the bars one by one. " * 1100
    with (out / "audit" / "caption_reasoner-rank0.jsonl").open("w") as f:
        for i in range(34_000):
            leak = i % 1000 == 0
            caption = "The answer is 5." if leak else "Five bars."
            record = {"step": i // 16, "caption": caption, "reasoner_outputs": [answer], "extracted": ["5" if i % 2 else None],
                      "scores": [float(i % 2)], "reward": float(i % 2), "leak": leak, "failed": None}  # fmt: skip
            f.write(json.dumps(record) + "\n")
    size = (out / "audit" / "caption_reasoner-rank0.jsonl").stat().st_size
    assert size > 1e9
    # racro report in a child whose peak memory (ru_maxrss of its own children) is measured
    probe = (
        "import resource, subprocess, sys; "
        f"r = subprocess.run([sys.executable, '-m', 'racro_trl.tools.cli', 'report', {str(out)!r}], capture_output=True, text=True); "
        "print(r.stdout); print(r.stderr, file=sys.stderr); "
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    code, log = run_logged([PYTHON, "-c", probe], tmp_path / "report.log", timeout=600)
    assert code == 0, log[-3000:]
    peak_mb = int(log.split("PEAK_KB")[1]) / 1024
    print(f"racro report on a {size / 1e9:.2f} GB audit: peak RSS {peak_mb:.0f} MB", file=sys.stderr)
    assert "34000 captions audited" in log and "leaks: 34 audited captions" in log
    assert peak_mb < 400, peak_mb

"""The optional LLM judge of `racro eval`: it extracts the answers of the finished stage-3 outputs, is
asked once per sample (cached), never for an output cut off inside its thinking, and its scores are
marked and kept in rows of their own. The judge is a real local OpenAI-compatible server
(tests/reasoner_standin.py); the three stages' outputs are the cache files `racro eval` writes, so
no model runs here."""

import csv
import json

import pytest
from reasoner_standin import MODEL, ReasonerStandIn

from helpers import b64, free_port, racro
from racro_trl.data.training_data import sample_rows
from racro_trl.evaluation.evaluate import _slug, evaluate
from racro_trl.evaluation.results_table import table_rows, write_table
from racro_trl.reasoning.judge import AnswerJudge

FINALS = {
    "1": "<think>counting</think> There are 4 of them, so 4.",  # no box: the rule misses it
    "2": "<think>so</think> The count is \\boxed{7}.",
    "3": "<think>I think it is 5, let me check the",  # cut off inside its thinking: no answer either way
    "4": "<think>compare</think> The larger one is the square, I choose B.",  # option letter, no box
}


def write_benchmark(folder):
    image = b64(sample_rows(1, seed=0)[0]["images"][0])
    rows = [
        {"index": "1", "question": "How many?", "answer": "4", "A": "", "B": ""},
        {"index": "2", "question": "How many?", "answer": "7", "A": "", "B": ""},
        {"index": "3", "question": "How many?", "answer": "5", "A": "", "B": ""},
        {"index": "4", "question": "Which is larger?", "answer": "B", "A": "circle", "B": "square"},
    ]
    path = folder / "Bench.tsv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["index", "question", "answer", "A", "B", "image"], delimiter="\t")
        writer.writeheader()
        writer.writerows({**r, "image": image} for r in rows)
    # the stage caches of a finished run (captioner "cap", reasoner "r1")
    for name, outputs in (
        (f"stage1_tentative_{_slug('cap')}", {i: "tentative" for i in FINALS}),
        (f"stage2_caption_{_slug('cap')}", {i: "caption" for i in FINALS}),
        (f"stage3_full_{_slug('cap', 'r1')}", FINALS),
    ):
        (folder / f"{name}.jsonl").write_text(
            "".join(json.dumps({"index": i, "output": o}) + "\n" for i, o in outputs.items())
        )
    return path


def test_judged_scores_are_extracted_once_marked_and_kept_apart(tmp_path):
    data = write_benchmark(tmp_path)
    run = lambda judge: evaluate(  # noqa: E731 (no model runs: every stage is cached)
        None, "Bench", data, tmp_path, mllm_name="cap", reasoner_name="r1", judge=judge,
        report_name="Bench_full" + ("_judged" if judge else ""),
    )  # fmt: skip
    rule = run(None)
    assert rule["scoring"] == "rule" and rule["correct"] == 1
    with ReasonerStandIn() as standin:
        judge = AnswerJudge(standin.url)
        assert judge.model == MODEL
        judged = run(judge)
        assert len(standin.judged) == 3, "one request per finished answer; none for the cut-off one"
        assert not any("</think>" in prompt for prompt in standin.judged), "the judge reads the answer part"
        assert any("Which is larger?\nOptions:\nA. circle\nB. square" in prompt for prompt in standin.judged)
        assert run(judge)["correct"] == 3 and len(standin.judged) == 3, "cached: nothing asked twice"
    assert judged["scoring"] == f"judge:{MODEL}" and judged["correct"] == 3
    results = [json.loads(line) for line in (tmp_path / "Bench_full_judged_results.jsonl").open()]
    assert [r["prediction"] for r in results] == ["4", "7", None, "B"]
    assert f"extracted by the LLM judge {MODEL}" in (tmp_path / "Bench_full_judged_summary.md").read_text()
    # rule-based and judged scores: rows of their own, never averaged together
    columns, rows = table_rows([rule, judged])
    assert [(r["scoring"], r["scores"]) for r in rows] == [
        ("rule", {"Bench": 25.0}),
        (f"judge:{MODEL}", {"Bench": 75.0}),
    ]
    table = write_table([rule, judged], tmp_path / "table").read_text()
    assert f"| 75.0 | 75.0 | judge:{MODEL} |" in table and "| 25.0 | 25.0 | rule |" in table


def test_unreachable_judge_fails_before_any_model_loads(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ValueError, match=f"the judge at {url} is unreachable"):
        AnswerJudge(url, max_retries=0)
    data = write_benchmark(tmp_path)
    out = racro("eval", "--benchmark", "Bench", "--data", str(data), "--mllm", "no/such-model", "--reasoner",
                "no/such-reasoner", "--out", str(tmp_path / "out"), "--judge-url", url)  # fmt: skip
    assert out.returncode != 0 and f"the judge at {url}" in out.stderr


def test_judge_model_the_server_does_not_serve_fails_at_once():
    with ReasonerStandIn() as standin:
        with pytest.raises(
            ValueError, match=f"--judge-model gpt-x: the judge at {standin.url} serves {MODEL}"
        ):
            AnswerJudge(standin.url, "gpt-x")
        assert AnswerJudge(standin.url, MODEL).model == MODEL

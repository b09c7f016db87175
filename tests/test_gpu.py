"""GPU checks (`pytest -m gpu`; skipped without CUDA): vLLM reasoner, ZeRO-3 launch, TRL colocate."""

import json
import os
from pathlib import Path

import pytest

from conftest import REPO, run_logged, tiny_launch

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def launch(accelerate_config, tiny_models, output_dir, *extra):
    command = tiny_launch(
        accelerate_config, tiny_models, output_dir, "--max_steps", "2", "--save_steps", "2",
        "--reasoner_gpu_memory_utilization", "0.15", *extra,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code, log = run_logged(command, Path(output_dir).with_suffix(".log"), timeout=300, env=env)
    assert code == 0, log[-8000:]
    return log


def test_vllm_reasoner_on_gpu(tiny_models):
    from racro_trl.reasoners import Sampling, build_reasoner

    reasoner = build_reasoner(
        "vllm",
        str(tiny_models["reasoner"]),
        gpu_memory_utilization=0.15,
        max_model_len=1024,
        enforce_eager=True,
    )
    assert reasoner.request_seeds, "per-request seeds are used on GPU"
    chats = [[{"role": "user", "content": f"caption {i}"}] for i in range(16)]
    first = reasoner.generate(chats, 4, Sampling(max_tokens=8, seed=3))
    assert len(first) == 16 and all(len(a) == 4 for a in first)
    assert first == reasoner.generate(chats, 4, Sampling(max_tokens=8, seed=3))
    assert sum("\\boxed{" in t for a in first for t in a) > 32
    reasoner.close()


@pytest.mark.timeout(1300)
def test_cro_step_under_zero3_keeps_reasoner_whole(tiny_models, tmp_path):
    log = launch(
        "configs/accelerate/zero3.yaml", tiny_models, tmp_path / "z3", "--reasoner_backend", "transformers"
    )
    assert "policy parameters partitioned by ZeRO-3: True" in log
    assert "ZeRO-3 partitioned: False" in log  # the transformers reasoner, loaded during training
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(tmp_path / "z3")  # 16-bit weights gathered at save
    log = launch("configs/accelerate/zero3.yaml", tiny_models, tmp_path / "z3v")  # the vLLM reasoner
    state = json.loads((tmp_path / "z3v" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and any(
        "rewards/caption_reasoner/mean" in h for h in state["log_history"]
    )


def test_trl_vllm_colocate_generates_captions(tiny_models, tmp_path):
    log = launch(
        "configs/accelerate/single.yaml", tiny_models, tmp_path / "colocate",
        "--use_vllm", "true", "--vllm_mode", "colocate", "--vllm_gpu_memory_utilization", "0.15",
    )  # fmt: skip
    state = json.loads((tmp_path / "colocate" / "trainer_state.json").read_text())
    steps = [h for h in state["log_history"] if "loss" in h]
    assert len(steps) == 2 and all(h["completions/mean_length"] > 0 for h in steps)
    assert "caption_reasoner" in log

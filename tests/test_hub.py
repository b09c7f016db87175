"""Pushing a run to the Hub, against a local stand-in of the Hub API (HF_ENDPOINT=http://127.0.0.1:PORT).

The real Hub is the target; the stand-in only serves create-repo, whoami, preupload and commit."""

import os

import pytest
from hub_standin import TOKEN, HubStandIn

from helpers import PYTHON, run_logged


def run(tiny_models, output_dir, hub, token, *extra):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(output_dir.parent / "hf-home")}
    if token:
        env["HF_TOKEN"] = token
    command = [
        PYTHON, "recipes/cro.py", "--config", "recipes/tiny/cro.yaml", "--max_steps", "2", "--save_steps", "2",
        "--model_name_or_path", str(tiny_models["policy"]), "--reasoner_model", str(tiny_models["reasoner"]),
        "--reasoner_backend", "transformers", "--output_dir", str(output_dir), "--push_to_hub", "true", *extra,
    ]  # fmt: skip
    return run_logged(command, output_dir.parent / "push.log", timeout=600, env=env)


@pytest.mark.slow
def test_push_sends_model_card_weights_and_processor(tiny_models, tmp_path):
    with HubStandIn() as hub:
        code, log = run(
            tiny_models,
            tmp_path / "run",
            hub,
            TOKEN,
            "--hub_model_id",
            "tester/tiny-cro",
            "--hub_private_repo",
            "true",
        )
        assert code == 0, log[-5000:]
        files = hub.files["tester/tiny-cro"]
        assert {"README.md", "model.safetensors", "config.json", "tokenizer.json"} <= set(files)
        assert any(name.startswith(("processor_config", "preprocessor_config")) for name in files)
        assert "Caption Reward Optimization" in files["README.md"].decode()
        assert hub.private["tester/tiny-cro"] is True
        assert not any(TOKEN.encode() in content for content in files.values())
    assert TOKEN not in log


# The check the recipe runs before any model loads, alone (the recipe's imports cost ~20 s a case).
CHECK = (
    "import sys, types; from racro_trl.training.card import check_hub_push; "
    "check_hub_push(types.SimpleNamespace(push_to_hub=True, hub_model_id=sys.argv[1], output_dir=sys.argv[2]))"
)


@pytest.mark.parametrize(
    ("token", "repo_id", "message"),
    [
        (None, None, "push_to_hub needs a Hub token: export HF_TOKEN"),
        ("hf_wrong", "tester/tiny-cro", "the Hub did not accept the token"),
        (TOKEN, "not a valid/repo id!", "is not a valid repo id"),
    ],
)
def test_push_problems_fail_before_training(tiny_models, tmp_path, token, repo_id, message):
    """The recipe stops before training without a token (first case); its check refuses a token the
    Hub rejects and an invalid repo id the same way (run alone)."""
    with HubStandIn() as hub:
        if repo_id is None:
            code, log = run(tiny_models, tmp_path / "run", hub, token)
        else:
            env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
            env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": token}
            command = [PYTHON, "-c", CHECK, repo_id, str(tmp_path / "run")]
            code, log = run_logged(command, tmp_path / "check.log", timeout=120, env=env)
    assert code != 0 and message in log
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").glob("checkpoint-*"))
    assert "hf_wrong" not in log


@pytest.mark.slow
def test_hub_strategy_checkpoint_pushes_the_resumable_checkpoint(tiny_models, tmp_path):
    with HubStandIn() as hub:
        code, log = run(
            tiny_models, tmp_path / "run", hub, TOKEN,
            "--hub_model_id", "tester/ckpt", "--hub_strategy", "checkpoint", "--save_steps", "1",
        )  # fmt: skip
        assert code == 0, log[-3000:]
        files = hub.files["tester/ckpt"]
        assert {
            "last-checkpoint/model.safetensors",
            "last-checkpoint/optimizer.pt",
            "last-checkpoint/trainer_state.json",
        } <= set(files)
        assert sum("/commit/" in r for r in hub.requests) >= 3  # one per save, then the final push


def test_export_pushes_a_plain_checkpoint(tiny_models, tmp_path):
    with HubStandIn() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home")}
        command = [
            PYTHON, "-m", "racro_trl.tools.cli", "export", "--checkpoint", str(tiny_models["policy"]),
            "--out", str(tmp_path / "exported"), "--push-to-hub", "tester/exported", "--private",
        ]  # fmt: skip
        code, log = run_logged(command, tmp_path / "export.log", timeout=300, env=env)
        assert code == 0, log[-3000:]
        assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(hub.files["tester/exported"])
        assert hub.private["tester/exported"] is True

"""Recipes and launch configs: every file parses; bad keys and bad combinations fail early and clearly."""

import json
from pathlib import Path

import pytest
import yaml

from racro_trl.training.configs import CROScriptArguments, make_parser, validate_run

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))


def parse(config: Path, *extra: str):
    return make_parser().parse_args_and_config(["--config", str(config), *extra])


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_parses(recipe):
    # GPU recipes ask for bf16, which transformers refuses on a machine without a GPU unless use_cpu.
    script_args, training_args, model_args = parse(recipe, "--use_cpu", "true")
    assert model_args.model_name_or_path
    assert script_args.dataset_name
    validate_run(script_args, training_args, num_processes=8 if "qwen" in recipe.parent.name else 1)
    raw = yaml.safe_load(recipe.read_text())
    assert not any(str(v).startswith("/") for v in raw.values()), "no absolute paths in recipes"
    # the batch arithmetic: whole groups of captions per step
    assert (
        training_args.per_device_train_batch_size * training_args.steps_per_generation
    ) % training_args.num_generations == 0
    if training_args.use_vllm:  # else vLLM takes the config's 128k context and may find no KV-cache room
        assert training_args.vllm_max_model_length, "a recipe sampling with vLLM sets vllm_max_model_length"
    if "wandb" in (training_args.report_to or []):
        assert "wandb" in extra_requirements("gpu"), "wandb comes with the gpu extra"


def test_gpu_recipe_maps_reference_hyperparameters():
    s, t, m = parse(REPO / "recipes/qwen2.5-vl-3b/cro.yaml", "--use_cpu", "true")
    assert (t.learning_rate, t.beta, t.epsilon, t.loss_type, t.num_generations) == (
        1e-6,
        0.001,
        0.2,
        "dapo",
        4,
    )
    assert (t.temperature, t.top_p, t.max_completion_length, t.weight_decay, t.max_grad_norm) == (
        1.0,
        1.0,
        8192,
        0.01,
        1.0,
    )
    assert s.reasoner_model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" and s.reasoner_temperature == 1.0
    # 8 GPUs: 1024 captions per rollout = 256 prompts x 4; 2 optimizer steps of 128 prompts
    assert 8 * t.per_device_train_batch_size * t.steps_per_generation == 1024
    assert 8 * t.per_device_train_batch_size * t.gradient_accumulation_steps == 512


def test_command_line_overrides_yaml():
    s, t, _ = parse(REPO / "recipes/tiny/cro.yaml", "--learning_rate", "5e-7", "--reasoner_num_samples", "2")
    assert t.learning_rate == 5e-7 and s.reasoner_num_samples == 2


def tiny_recipe_with(tmp_path, **changes) -> Path:
    """The tiny recipe with some keys changed, written to tmp_path."""
    cfg = yaml.safe_load((REPO / "recipes/tiny/cro.yaml").read_text()) | changes
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_unknown_yaml_key_fails(tmp_path):
    with pytest.raises(ValueError, match="reasoner_modle"):
        parse(tiny_recipe_with(tmp_path, reasoner_modle="typo"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reasoner_backend": "openai", "reasoner_url": None}, "needs reasoner_url"),
        (
            {"reasoner_backend": "vllm", "reasoner_url": "http://127.0.0.1:1/v1"},
            "set reasoner_backend: openai",
        ),
        ({"reasoner_backend": "sglang"}, "reasoner_backend must be one of"),
        (
            {"reward_funcs": ["caption_reward"]},
            "valid names: answer_accuracy, boxed_format, caption_gain, caption_leak_penalty, caption_reasoner",
        ),
        ({"prompt_format": "qa_cot"}, "use reward_funcs: \\[answer_accuracy\\]"),
        ({"prompt_format": "describe"}, "prompt_format must be one of"),
        ({"reasoner_num_samples": 0}, "reasoner_num_samples must be >= 1"),
        ({"reasoner_model": None}, "needs reasoner_model"),
        (
            {"reasoner_sleep": True, "reasoner_backend": "openai", "reasoner_url": "http://127.0.0.1:1/v1"},
            "reasoner_sleep puts the in-process vLLM reasoner to sleep",
        ),
        ({"reasoner_engine_kwargs": {"gpu_memory_utilization": 0.5}}, "use reasoner_gpu_memory_utilization"),
        ({"reasoner_engine_kwargs": "{load_format: dummy}"}, "not a JSON object"),
        (
            {
                "reasoner_engine_kwargs": {"load_format": "dummy"},
                "reasoner_backend": "openai",
                "reasoner_url": "http://127.0.0.1:1/v1",
            },
            "but reasoner_backend is 'openai'",
        ),
    ],
)
def test_bad_combinations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CROScriptArguments(dataset_name="data/sample", **kwargs)


def test_engine_kwargs_from_the_command_line_reach_the_engine():
    s, _, _ = parse(REPO / "recipes/tiny/cro.yaml", "--reasoner_engine_kwargs", '{"load_format": "dummy"}')
    assert s.reasoner_kwargs()["load_format"] == "dummy"


def test_bad_combination_from_yaml_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="reasoner_url"):
        parse(tiny_recipe_with(tmp_path, reasoner_backend="openai"))


def test_run_checks():
    s, t, _ = parse(REPO / "recipes/tiny/cro.yaml")
    s.reasoner_tensor_parallel_size = 2
    with pytest.raises(ValueError, match="vllm serve"):
        validate_run(s, t, num_processes=4)
    s.reasoner_tensor_parallel_size = 1
    t.reward_weights = [1.0, 0.5]
    with pytest.raises(ValueError, match="one weight per function"):
        validate_run(s, t, num_processes=1)
    t.reward_weights = None
    s.reasoner_sleep = True
    with pytest.raises(ValueError, match="does not offer on this platform \\(cpu\\)"):
        validate_run(s, t, num_processes=1)
    t.use_vllm, t.vllm_mode, t.vllm_enable_sleep_mode = True, "colocate", True
    with pytest.raises(ValueError, match="one sleeping engine per process"):
        validate_run(s, t, num_processes=1)


@pytest.mark.parametrize("config", sorted((REPO / "configs/accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs(config):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(config))
    if cfg.distributed_type == "DEEPSPEED":
        ds_file = REPO / cfg.deepspeed_config["deepspeed_config_file"]
        ds = json.loads(ds_file.read_text())
        stage = ds["zero_optimization"]["stage"]
        assert config.stem.startswith(f"zero{stage}") or config.stem == "multinode"
        assert ds["bf16"]["enabled"] == "auto"
        if stage == 3:
            assert cfg.deepspeed_config["zero3_init_flag"] is True
            assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_multinode_config_is_zero3_on_two_machines():
    """configs/accelerate/multinode.yaml differs from zero3.yaml only in where the machines are (the CPU
    two-machine test runs the DDP config; the GPU test launches this one)."""
    machine_keys = {"num_machines", "num_processes", "main_process_ip", "main_process_port"}
    zero3 = yaml.safe_load((REPO / "configs/accelerate/zero3.yaml").read_text())
    multinode = yaml.safe_load((REPO / "configs/accelerate/multinode.yaml").read_text())
    assert {k: v for k, v in multinode.items() if k not in machine_keys} == {
        k: v for k, v in zero3.items() if k not in machine_keys
    }
    assert (multinode["num_machines"], multinode["num_processes"]) == (2, 16)


def test_hub_token_in_a_recipe_is_refused():
    s, t, _ = parse(REPO / "recipes/tiny/cro.yaml", "--hub_token", "hf_abc")
    with pytest.raises(ValueError, match="export HF_TOKEN in the environment"):
        validate_run(s, t, num_processes=1)


def extra_requirements(extra: str) -> set[str]:
    """What ``pip install racro-trl[<extra>]`` installs besides the core: the installed package's own
    metadata (as pip reads it), not the text of pyproject.toml."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    wanted = [Requirement(r) for r in requires("racro-trl") or []]
    return {r.name for r in wanted if r.marker is not None and r.marker.evaluate({"extra": extra})}

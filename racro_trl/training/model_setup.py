"""How the policy loads, what of it trains, and from where training resumes."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

# LoRA on the language model's projections only (the vision tower's blocks use other names, but its
# MLP also has gate/up/down_proj: the prefix keeps it out).
LANGUAGE_MODEL_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def attention_implementation(name: str | None) -> str | None:
    """``name``, or ``sdpa`` when it is ``flash_attention_2`` and flash-attn is not installed (it is an
    optional extra that compiles from source), said in the log."""
    from transformers.utils import is_flash_attn_2_available

    if name == "flash_attention_2" and not is_flash_attn_2_available():
        logger.warning(
            "attn_implementation flash_attention_2 asked for, but flash-attn is not installed (or no CUDA): "
            "using sdpa. `pip install -e '.[flash-attn]' --no-build-isolation` builds it (see README)"
        )
        return "sdpa"
    return name


def default_lora_targets(model_args) -> None:
    """With ``use_peft`` and no ``lora_target_modules``, target the language model only."""
    if model_args.use_peft and not model_args.lora_target_modules:
        model_args.lora_target_modules = LANGUAGE_MODEL_LORA_TARGETS


def freeze_vision_tower(model) -> int:
    """Stop gradients into the vision encoder; returns how many parameters were frozen.

    Must run before the optimizer is built (``trainer.train()`` builds it), which only takes
    parameters that require gradients.
    """
    frozen = 0
    for name, param in model.named_parameters():
        if re.search(r"(^|\.)visual\.", name):
            param.requires_grad_(False)
            frozen += full_numel(param)
    if not frozen:
        raise ValueError("freeze_vision_tower: the model has no `visual` parameters (not a Qwen2.5-VL?)")
    logger.info("vision tower frozen: %.1fM parameters", frozen / 1e6)
    return frozen


def full_numel(param) -> int:
    """A parameter's element count, whole even when ZeRO-3 left this rank a shard (``numel()`` is 0 then)."""
    return getattr(param, "ds_numel", param.numel())


def partitioning(model) -> str:
    """How the policy's parameters lie on this rank: ZeRO-3 partitioned or whole, local / total count."""
    params = list(model.parameters())
    partitioned = any(hasattr(p, "ds_id") for p in params)
    local = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
    total = sum(full_numel(p) for p in params)
    return f"policy parameters partitioned by ZeRO-3: {partitioned} (this rank holds {local / 1e6:.1f}M of {total / 1e6:.1f}M)"


def usable_checkpoint(path: str | Path) -> str | None:
    """Why ``path`` cannot be resumed from, or None when it can."""
    path = Path(path)
    if not path.is_dir():
        return "no such folder"
    state = path / "trainer_state.json"
    try:
        json.loads(state.read_text())["global_step"]
    except (OSError, ValueError, KeyError) as error:
        return f"trainer_state.json unreadable ({type(error).__name__})"
    return None


def resume_checkpoint(output_dir: str | Path, explicit: str | None) -> str | None:
    """The checkpoint to resume from: ``explicit`` (checked), else the newest usable one in ``output_dir``.

    A checkpoint left half-written by a crash is skipped with a warning, so the run falls back to
    the one before it instead of failing.
    """
    if explicit:
        problem = usable_checkpoint(explicit)
        if problem:
            raise ValueError(f"resume_from_checkpoint {explicit} is not a usable checkpoint: {problem}")
        return explicit
    candidates = sorted(
        (p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for candidate in candidates:
        problem = usable_checkpoint(candidate)
        if problem is None:
            return str(candidate)
        logger.warning("skipping %s for resume: %s", candidate, problem)
    return None

"""``racro export``: a training output or checkpoint -> a plain Hugging Face Qwen2.5-VL checkpoint.

Handles what training leaves behind: full weights (``model.safetensors``, sharded or not, incl.
ZeRO-3's gathered 16-bit save), a LoRA adapter (merged into its base with ``--merge-lora``), and a
ZeRO-3 checkpoint holding only partitioned states (``global_step*/``, recovered with DeepSpeed's
``zero_to_fp32``). The processor is copied along, so vLLM and transformers load the result as is.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


class ExportError(ValueError):
    """The folder cannot be exported as asked."""


def checkpoint_kind(path: Path) -> str:
    """``adapter``, ``full`` or ``zero`` (partitioned DeepSpeed states only); raises ExportError otherwise."""
    if not path.is_dir():
        raise ExportError(f"{path} is not a folder")
    if (path / "adapter_config.json").exists():
        return "adapter"
    if any(path.glob("model*.safetensors")) or any(path.glob("pytorch_model*.bin")):
        return "full"
    if (path / "latest").exists() or any(path.glob("global_step*")):
        return "zero"
    raise ExportError(
        f"{path} holds no model weights (model*.safetensors, an adapter, or a DeepSpeed global_step*/ checkpoint); "
        "point --checkpoint at a training output_dir or one of its checkpoint-N folders"
    )


def _base_of(adapter_dir: Path) -> str:
    return json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]


def _processor_source(checkpoint: Path, kind: str) -> str:
    """Where the processor lives: the checkpoint (the recipe saves it there) or the adapter's base."""
    if (checkpoint / "preprocessor_config.json").exists() or (checkpoint / "processor_config.json").exists():
        return str(checkpoint)
    if (checkpoint.parent / "preprocessor_config.json").exists():
        return str(checkpoint.parent)
    if kind == "adapter":
        return _base_of(checkpoint)
    return str(checkpoint)


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, *, merge_lora: bool = False, dtype: str = "bfloat16"
) -> Path:
    """Write a plain HF checkpoint (weights, config, generation config, processor) to ``out``.

    Raises:
        ExportError: not a checkpoint, an adapter without ``merge_lora``, ``out`` inside ``checkpoint``.
    """
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    checkpoint, out = Path(checkpoint).resolve(), Path(out).resolve()
    kind = checkpoint_kind(checkpoint)
    if out == checkpoint or checkpoint in out.parents:
        raise ExportError(f"--out {out} must not be the checkpoint folder or inside it")
    torch_dtype = getattr(torch, dtype)
    if kind == "adapter":
        if not merge_lora:
            raise ExportError(
                f"{checkpoint} holds a LoRA adapter: pass --merge-lora to merge it into its base model"
            )
        from peft import PeftModel

        base = AutoModelForImageTextToText.from_pretrained(_base_of(checkpoint), dtype=torch_dtype)
        model = PeftModel.from_pretrained(base, str(checkpoint)).merge_and_unload()
    elif kind == "full":
        model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch_dtype)
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        config_dir = checkpoint if (checkpoint / "config.json").exists() else checkpoint.parent
        model = AutoModelForImageTextToText.from_config(
            AutoConfig.from_pretrained(config_dir), dtype=torch_dtype
        )
        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise ExportError(
                f"ZeRO checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        model.tie_weights()
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(_processor_source(checkpoint, kind)).save_pretrained(out)
    logger.info("exported %s checkpoint %s to %s", kind, checkpoint, out)
    return out

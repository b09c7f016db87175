"""What the caption sampler is handed: the rule that the sampled prompt is the trained prompt.

Three pieces, used by :class:`racro_trl.training.trainer.CROTrainer` for every sampling backend:

* images are resized once, before any processor sees them, to a grid-aligned size inside the
  recipe's pixel bounds (``qwen_vl_utils.smart_resize``). Every Qwen2.5-VL processor whose bounds
  contain that size keeps it as it is, so the trainer's processor (recipe bounds) and vLLM's
  (the checkpoint's bounds) cut the same patch grid;
* vLLM gets one ``<|image_pad|>`` per image and expands it itself; the trainer keeps the
  processor-expanded ids it computes log-probs on;
* the policy never samples a vision special token (a sampled ``<|image_pad|>`` would count as an
  image slot in the training forward).
"""

from __future__ import annotations

import re

VISION_TOKEN = re.compile(r"^<\|(vision_[a-z]+|image_pad|video_pad)\|>$")


def pixel_bounds(image_processor) -> tuple[int, int, int]:
    """``(factor, min_pixels, max_pixels)`` of a Qwen2-VL image processor: the grid cell in pixels
    (patch size x merge size) and the image area bounds it resizes into."""
    size = getattr(image_processor, "size", None) or {}
    low = size.get("shortest_edge") or getattr(image_processor, "min_pixels", None)
    high = size.get("longest_edge") or getattr(image_processor, "max_pixels", None)
    if not low or not high:
        raise ValueError(
            f"{type(image_processor).__name__} has no pixel bounds (size.shortest_edge/longest_edge); "
            "racro-trl trains Qwen2-VL-family policies"
        )
    return image_processor.patch_size * image_processor.merge_size, int(low), int(high)


def aligned_size(width: int, height: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) on the processor grid, area inside the bounds, aspect kept: Qwen's own rule.

    >>> aligned_size(200, 200, 28, 56 * 56, 112 * 112)
    (112, 112)
    >>> aligned_size(112, 56, 28, 56 * 56, 112 * 112)  # already aligned and inside: kept
    (112, 56)
    """
    from qwen_vl_utils import smart_resize

    h, w = smart_resize(height, width, factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return w, h


def align_image(image, factor: int, min_pixels: int, max_pixels: int):
    """``image`` resized to :func:`aligned_size` (bicubic, as the Qwen processors resize), or itself
    when it is already there."""
    from PIL import Image

    size = aligned_size(*image.size, factor, min_pixels, max_pixels)
    if size == image.size:
        return image
    return image.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def checkpoint_keeps(trainer_bounds: tuple[int, int, int], checkpoint_bounds: tuple[int, int, int]) -> bool:
    """Whether a processor with ``checkpoint_bounds`` keeps every image aligned to ``trainer_bounds``.

    >>> checkpoint_keeps((28, 512 * 512, 2048 * 2048), (28, 3136, 12845056))
    True
    >>> checkpoint_keeps((28, 3136, 12845056), (28, 512 * 512, 2048 * 2048))
    False
    """
    factor, low, high = trainer_bounds
    other_factor, other_low, other_high = checkpoint_bounds
    return factor == other_factor and other_low <= low and high <= other_high


def vision_token_ids(processing_class) -> dict[str, int]:
    """The vision special tokens of a VLM processor (``<|vision_start|>``, ``<|image_pad|>``, ...) by name."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    found = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if VISION_TOKEN.match(t.content)}
    for attr in ("image_token", "video_token"):
        token = getattr(processing_class, attr, None)
        if token:
            found[token] = tokenizer.convert_tokens_to_ids(token)
    return found


def one_placeholder_per_image(prompt_ids: list[list[int]], image_token_id: int) -> list[list[int]]:
    """Each run of ``image_token_id`` cut to one token: the prompt vLLM expands against its images.

    >>> one_placeholder_per_image([[1, 5, 5, 5, 2, 5, 5, 3]], 5)
    [[1, 5, 2, 5, 3]]
    """
    return [
        [t for i, t in enumerate(ids) if t != image_token_id or i == 0 or ids[i - 1] != image_token_id]
        for ids in prompt_ids
    ]


def image_runs(ids: list[int], image_token_id: int) -> list[int]:
    """Lengths of the runs of ``image_token_id`` in ``ids``: one per image, its visual token count.

    >>> image_runs([1, 5, 5, 2, 5, 5, 5, 3], 5)
    [2, 3]
    """
    runs, previous = [], None
    for t in ids:
        if t == image_token_id:
            if previous == image_token_id:
                runs[-1] += 1
            else:
                runs.append(1)
        previous = t
    return runs


def prompt_mismatch(trained: list[list[int]], sampled: list[list[int]], image_token_id: int) -> str | None:
    """Why the prompts vLLM sampled from differ from the prompts the trainer trains on, or None."""
    for i, (a, b) in enumerate(zip(trained, sampled, strict=True)):
        if list(a) != list(b):
            return (
                f"prompt {i}: the trainer's has {len(a)} ids with image runs {image_runs(a, image_token_id)}, "
                f"vLLM's has {len(b)} with {image_runs(list(b), image_token_id)}"
            )
    return None

"""Real architectures with dummy weights, for speed and memory figures (no hub: configs written here).

``reasoner_dir``: DeepSeek-R1-Distill-Qwen-7B's Qwen2 shape; ``policy_dir``: Qwen2.5-VL-3B-Instruct's
shape (or -7B's, with the ``QWEN25_VL_7B_*`` configs). Both get a byte-level tokenizer padded to the real vocabulary size (one token per byte of
text, so a prompt's token count is its length in bytes) and a Qwen chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

from .tiny import CHAT_TEMPLATE, SPECIAL_TOKENS

R1_DISTILL_QWEN_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
    "max_position_embeddings": 131072, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    "hidden_act": "silu", "torch_dtype": "bfloat16", "use_sliding_window": False,
}  # fmt: skip

QWEN25_VL_3B_TEXT = {
    "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
}  # fmt: skip
QWEN25_VL_3B_VISION = {
    "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
    "fullatt_block_indexes": [7, 15, 23, 31], "window_size": 112, "patch_size": 14, "spatial_merge_size": 2,
    "temporal_patch_size": 2, "in_chans": 3, "hidden_act": "silu",
}  # fmt: skip
QWEN25_VL_7B_TEXT = {
    "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
}  # fmt: skip
QWEN25_VL_7B_VISION = {**QWEN25_VL_3B_VISION, "out_hidden_size": 3584}


def byte_tokenizer(vocab_size: int):
    """A byte-level tokenizer with ``vocab_size`` entries: bytes, fillers, then Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    fillers = vocab_size - len(alphabet) - len(SPECIAL_TOKENS) - 1
    vocab = {tok: i for i, tok in enumerate(sorted(alphabet) + [f"<filler{i}>" for i in range(fillers)])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    fast.add_tokens(["\\boxed{"])
    fast.eos_token, fast.pad_token = "<|im_end|>", "<|endoftext|>"
    fast.chat_template = CHAT_TEMPLATE
    assert len(fast) == vocab_size, (len(fast), vocab_size)
    return fast


def printable_token_ids(tokenizer) -> list[int]:
    """Ids of the single-byte tokens for letters, digits, space and punctuation.

    A random policy sampling from the whole vocabulary mostly emits ``<fillerN>`` tokens, which decode
    to strings that re-tokenize about 13x longer. Restricting caption sampling to these ids
    (``allowed_token_ids``) makes a caption of n tokens an n-byte text, so the reward prompts the
    reasoner sees are as long as real captions would make them.
    """
    import string

    chars = string.ascii_letters + string.digits + " .,;:()-"
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in chars]
    assert all(len(i) == 1 for i in ids), "not a byte-level tokenizer"
    return [i[0] for i in ids]


def reasoner_dir(path: str | Path) -> Path:
    """config.json + tokenizer of the R1-Distill-Qwen-7B shape (load with load_format='dummy')."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = byte_tokenizer(R1_DISTILL_QWEN_7B["vocab_size"])
    config = dict(
        R1_DISTILL_QWEN_7B, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None
    )
    (path / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(path)
    return path


def policy_dir(
    path: str | Path, text=QWEN25_VL_3B_TEXT, vision=QWEN25_VL_3B_VISION, seed: int = 0, weights: bool = True
) -> Path:
    """A Qwen2.5-VL (3B shape by default) with random bf16 weights saved, and its processor;
    ``weights=False``: the config and processor only (for vLLM's load_format='dummy')."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    path = Path(path)
    tok = byte_tokenizer(text["vocab_size"])
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(text, eos_token_id=ids["<|im_end|>"], pad_token_id=tok.pad_token_id, bos_token_id=None),
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )  # fmt: skip
    if weights:
        torch.manual_seed(seed)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
        model.generation_config.eos_token_id = ids["<|im_end|>"]
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(path)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the caller starts vLLM engines / training on this GPU next
    else:
        config.architectures = ["Qwen2_5_VLForConditionalGeneration"]  # vLLM picks its runner from it
        config.save_pretrained(path)
    processor = Qwen2_5_VLProcessor(
        # The bounds of Qwen/Qwen2.5-VL-*-Instruct's preprocessor_config.json, with which vLLM resizes.
        image_processor=Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)
    return path


def wait_healthy(url: str, server, log: Path, seconds: int = 600) -> None:
    """Wait until a server subprocess answers ``url/health``; exit with the end of its log if it dies or never does."""
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(3)
    raise SystemExit(f"server not healthy:\n{log.read_text()[-3000:]}")

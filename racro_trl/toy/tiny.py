"""Tiny random models, built locally, for tests and the demo (no hub on these machines).

Two checkpoints share one byte-level BPE tokenizer trained on the spot:

* ``policy/``: a Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``) with its processor and chat
  template, the same classes as Qwen/Qwen2.5-VL-3B-Instruct;
* ``reasoner/``: a Qwen2-architecture causal LM (the architecture of DeepSeek-R1-Distill-Qwen-7B).

Both are saved with ``save_pretrained`` and loaded back through ``from_pretrained(path)``, the same
code path real checkpoints take. vLLM's CPU kernels want head_dim 64, and a random model must not
be able to sample an id the tokenizer cannot decode, so ``vocab_size == len(tokenizer)``.

The reasoner's output layer is zero except for the rows of the answer alphabet (``\\boxed{``, digits,
``}``, end of turn): its answers are still random and depend on the caption it reads, but they are
graded answers, so the CRO reward is sometimes 1 and GRPO has a signal to follow in tests.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>", "<think>", "</think>",
]  # fmt: skip
BOXED_TOKEN = "\\boxed{"
ANSWER_ALPHABET = [BOXED_TOKEN, "}", "<|im_end|>", *"0123456789ABC"]

# Qwen's chat template, reduced: string or block content, images as vision pads.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS_PHRASES = [
    "You are given an image and a relevant question. Based on the query, please describe the image in detail.",
    "Question: How many red circles are there? Please describe the image. DO NOT try to answer the question!",
    "The detailed caption of the provided image: a blue square, two green triangles and a yellow circle.",
    "Please think step by step. The final answer MUST BE put in \\boxed{}. The answer is 3.",
    # The colour task (racro_trl/toy/colour_task.py): its words are whole tokens, as in a real vocabulary.
    "What colour is the shape? The shape is red. The shape is green. The shape is blue. The shape is yellow.",
    *["\\boxed{red} \\boxed{green} \\boxed{blue} \\boxed{yellow} \\boxed{none}"] * 3,
]


def build_tokenizer(vocab_size: int = 1000, seed: int = 0, phrases: list[str] = ()):
    """A byte-level BPE tokenizer with Qwen's special tokens and a chat template; ``phrases`` join the
    corpus (20 times each), so that a task's words become whole tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8)))
        for _ in range(3000)
    ]
    corpus = [" ".join(rng.choice(words) for _ in range(50)) for _ in range(400)] + [
        *_CORPUS_PHRASES,
        *phrases,
    ] * 20
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_tokens([BOXED_TOKEN])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_reasoner(
    out: str | Path,
    tokenizer=None,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 128,
    answer_head: bool = True,
) -> Path:
    """Save a tiny Qwen2 causal LM + tokenizer to ``out`` (``hidden`` / 64 heads of 64); returns the path.
    ``answer_head``: fit the output layer to the answer grammar (below), else leave it random."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    tokenizer = tokenizer or build_tokenizer(seed=seed)
    torch.manual_seed(seed)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, head_dim=64, max_position_embeddings=4096,
        tie_word_embeddings=False, eos_token_id=eos, bos_token_id=None, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    if answer_head:
        _fit_answer_head(model, tokenizer, seed)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _fit_answer_head(model, tokenizer, seed: int) -> None:
    """Fit the output layer (least squares on the final hidden states) to a tiny answer grammar.

    After the generation prompt the model writes ``\\boxed{``, then one of 1-6 or A-C (the answers of
    the sample data, about uniform), then ``}``,
    then ends its turn. The body stays random; only ``lm_head`` is set.
    """
    rng = random.Random(seed)
    boxed, close, eos = (
        tokenizer.convert_tokens_to_ids(_bpe_token(tokenizer, t)) for t in (BOXED_TOKEN, "}", "<|im_end|>")
    )
    digits = tokenizer.convert_tokens_to_ids([_bpe_token(tokenizer, d) for d in "123456ABC"])
    # (tokens written so far, next tokens the grammar allows)
    grammar = [([], [boxed])] + [([boxed, d], [close]) for d in digits] + [([boxed, digits[0], close], [eos])]
    grammar.append(([boxed], digits))
    words = _CORPUS_PHRASES[2].split()
    features, targets = [], []
    model.eval()
    with torch.no_grad():
        for _ in range(48):
            chat = [{"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(3, 40)))}]
            prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True)
            prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
            for written, allowed in grammar:
                ids = torch.tensor([prompt + written])
                hidden = model.model(input_ids=ids).last_hidden_state[0, -1]
                target = torch.zeros(model.config.vocab_size)
                target[allowed] = 12.0
                features.append(hidden)
                targets.append(target)
        weight = torch.linalg.lstsq(torch.stack(features), torch.stack(targets)).solution.T
        model.lm_head.weight.copy_(weight)


def _bpe_token(tokenizer, text: str) -> str:
    """The vocabulary entry of a one-token string ('0' is itself, added tokens too)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is not a single token of the tiny tokenizer: {ids}")
    return tokenizer.convert_ids_to_tokens(ids[0])


def build_policy(out: str | Path, tokenizer=None, seed: int = 0, text_layers: int = 2) -> Path:
    """Save a tiny Qwen2.5-VL model + processor (tokenizer, image processor, chat template) to ``out``."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out)
    tokenizer = tokenizer or build_tokenizer(seed=seed)
    torch.manual_seed(seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=text_layers,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
            # mrope sections must sum to head_dim / 2 = 32.
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
            eos_token_id=ids["<|im_end|>"], bos_token_id=None, pad_token_id=tokenizer.pad_token_id,
        ),
        # hidden 128 / 2 heads = head_dim 64 for vLLM; with depth 2 the last block must be full attention.
        vision_config=dict(
            depth=2, hidden_size=128, intermediate_size=256, num_heads=2, out_hidden_size=128,
            fullatt_block_indexes=[1], window_size=112, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )  # fmt: skip
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    image_processor = Qwen2VLImageProcessor(
        min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    return out


def build_tiny_models(
    out_dir: str | Path, seed: int = 0, force: bool = False, colour_task: bool = True
) -> dict[str, Path]:
    """Build ``out_dir/policy`` and ``out_dir/reasoner`` (random), and with ``colour_task`` the
    ``reader`` reasoner and warm-started ``captioner`` of :mod:`racro_trl.toy.colour_task` (about two
    minutes on 2 cores); what is already there is kept unless ``force``."""
    from .colour_task import build_captioner, build_reader

    out_dir = Path(out_dir)
    paths = {"policy": out_dir / "policy", "reasoner": out_dir / "reasoner"}
    if colour_task:
        paths |= {"reader": out_dir / "reader", "captioner": out_dir / "captioner"}
    todo = {role for role, p in paths.items() if force or not (p / "config.json").exists()}
    if not todo:
        logger.info("tiny models already in %s", out_dir)
        return paths
    if todo & {"policy", "reasoner"} or force:
        tokenizer = build_tokenizer(seed=seed)
        build_policy(paths["policy"], tokenizer, seed)
        build_tiny_reasoner(paths["reasoner"], tokenizer, seed)
        todo |= set(paths) - {"policy", "reasoner"}  # built on the new tokenizer
    if "reader" in todo:
        build_reader(paths["reader"], paths["reasoner"], seed)
    if "captioner" in todo:
        build_captioner(paths["captioner"], paths["policy"], seed)
    logger.info("tiny models written to %s", out_dir)
    return paths

"""A task CRO can visibly learn on two CPU cores: what colour is the shape?

* **Data** (``racro make-sample-data --task colour``): one shape per image, in one of four colours,
  balanced; the question is the same for every row, so the gold answer depends on the image alone.
  Chance is 1/4, and a captioner that ignores the image cannot beat it.
* **Reader** (a tiny Qwen2 reasoner, ``racro make-tiny``): trained with TRL's ``SFTTrainer`` to box
  the colour its caption names, and ``none`` when the caption names no colour or several (a caption
  that lists every colour earns nothing).
* **Captioner** (the tiny Qwen2.5-VL policy, warm-started with ``SFTTrainer``): writes "The shape is
  <colour>." with the colour drawn at random, whatever the image, so CRO starts at chance and must
  learn which word goes with which image.

``make demo`` trains the captioner with CRO against the reader (``recipes/tiny/cro_colour.yaml``).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from . import prompts
from .data import COLORS, SHAPES, _draw

logger = logging.getLogger(__name__)

COLOURS = tuple(COLORS)
QUESTION = "What colour is the shape?"
CHANCE = 1 / len(COLOURS)
IMAGE_SIZE = 56  # the tiny processor's smallest grid: 2 x 2 visual tokens after the merge
_FILLER = ("a", "the", "shape", "image", "light", "background", "small", "large", "in", "with", "one")


def colour_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """``n`` rows (a multiple of 4: the colours are balanced), shuffled, in the training schema."""
    from PIL import Image, ImageDraw

    if n % len(COLOURS):
        raise ValueError(f"n must be a multiple of {len(COLOURS)} (balanced colours), got {n}")
    rng = random.Random(seed)
    colours = [COLOURS[i % len(COLOURS)] for i in range(n)]
    rng.shuffle(colours)
    rows = []
    for i, colour in enumerate(colours):
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (235, 235, 235))
        pad = rng.randint(2, 10)
        _draw(
            ImageDraw.Draw(image),
            rng.choice(SHAPES),
            (pad, pad, IMAGE_SIZE - pad, IMAGE_SIZE - pad),
            COLORS[colour],
        )
        rows.append(
            {
                "images": [image],
                "question": QUESTION,
                "answer": colour,
                "category": "colour",
                "source": "racro-synthetic-colour",
                "qid": f"colour-{i:04d}",
            }
        )
    return rows


def reader_caption(rng: random.Random) -> tuple[str, str]:
    """A caption and the answer the reader should box for it: its one colour, else ``none``."""
    named = rng.choice(
        [[], [rng.choice(COLOURS)], [rng.choice(COLOURS)], [rng.choice(COLOURS)], rng.sample(COLOURS, 2)]
    )
    words = [rng.choice(_FILLER) for _ in range(rng.randint(0, 6))]
    for colour in named:
        words.insert(rng.randint(0, len(words)), colour)
    template = rng.random()
    caption = " ".join(words)
    if template < 0.5 and len(named) == 1:
        caption = f"The shape is {named[0]}."  # what the warm captioner writes
    elif template < 0.7:
        caption = caption.capitalize() + "."
    return caption, named[0] if len(named) == 1 else "none"


def reader_examples(n: int, seed: int) -> list[dict]:
    """Prompt-completion chats of the CRO reward prompt, for ``SFTTrainer``."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        caption, answer = reader_caption(rng)
        examples.append(
            {
                "prompt": prompts.reasoner_reward_messages(caption, QUESTION),
                "completion": [{"role": "assistant", "content": f"\\boxed{{{answer}}}"}],
            }
        )
    return examples


def _sft(
    model, processing_class, dataset, out: Path, seed: int, steps: int, lr: float, batch: int, schedule: str
) -> None:
    """A short ``SFTTrainer`` run on CPU, loss on the completion only; saves model and processor to ``out``.

    The reader's learning rate decays to 0 (``linear``): at a constant 2e-3 its last steps spiked (grad
    norm 10-30) and the saved model had unlearned its end-of-turn token. The captioner's stays
    ``constant``: decayed, it learned the colours of the question prompt less (72% against 97%).
    Gradient checkpointing (on in TRL's SFTConfig by default) is off: recomputing these tiny models'
    forward passes took 16 of `racro make-tiny`'s 122 s on 2 cores, and the models come out the same.
    """
    import tempfile

    from trl import SFTConfig, SFTTrainer

    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
            lr_scheduler_type=schedule, warmup_steps=0, weight_decay=0.0, logging_steps=max(1, steps // 5),
            save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=seed, data_seed=seed,
            max_length=None, disable_tqdm=True, gradient_checkpointing=False,
        )  # fmt: skip
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processing_class)
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    logger.info("SFT of %s: loss %.3f -> %.3f over %d steps", out.name, losses[0], losses[-1], steps)
    trainer.model.save_pretrained(out)
    processing_class.save_pretrained(out)


def build_reader(out: str | Path, reasoner_dir: str | Path, seed: int = 0, steps: int = 150) -> Path:
    """A reasoner of ``reasoner_dir``'s architecture and tokenizer, trained from a fresh start to box
    the colour its caption names; checked on held-out captions before it is returned."""
    import datasets
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(reasoner_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(reasoner_dir)
    dataset = datasets.Dataset.from_list(reader_examples(steps * 32, seed))
    _sft(model, tokenizer, dataset, out, seed, steps, lr=2e-3, batch=32, schedule="linear")
    accuracy = reader_accuracy(model, tokenizer, reader_examples(64, seed + 1000))
    if accuracy < 0.95:
        raise RuntimeError(
            f"the reader boxes the right answer for {accuracy:.0%} of held-out captions (< 95%)"
        )
    logger.info("reader: %.0f%% of held-out captions answered right, with an end of turn", 100 * accuracy)
    return out


def reader_accuracy(model, tokenizer, examples: list[dict]) -> float:
    """Share of ``examples`` for which greedy decoding writes exactly the completion, then ends its turn."""
    import torch

    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template(e["prompt"], tokenize=False, add_generation_prompt=True)
        for e in examples
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.eval().generate(
            **batch, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    answers = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :])
    expected = [e["completion"][0]["content"] + tokenizer.eos_token for e in examples]
    return sum(a.startswith(x) for a, x in zip(answers, expected, strict=True)) / len(examples)


def build_captioner(out: str | Path, policy_dir: str | Path, seed: int = 0, steps: int = 160) -> Path:
    """The tiny policy of ``policy_dir`` warm-started with ``SFTTrainer`` on two prompts: asked the
    question itself (the ``qa_cot`` prompt), it names the shape's true colour; asked for a caption, it
    names a random colour. So it perceives the colour, but its captions do not convey it: chance, as
    for a captioner whose captions miss what the question needs. CRO has to carry the perception over."""
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = Path(out)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = AutoModelForImageTextToText.from_pretrained(policy_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(policy_dir)
    rows = []
    for i, row in enumerate(colour_rows(256, seed + 1)):
        caption = i % 2 == 0
        colour = rng.choice(COLOURS) if caption else row["answer"]
        build = prompts.caption_messages if caption else prompts.qa_cot_messages
        rows.append(
            {
                "images": row["images"],
                "prompt": build(row["question"], 1),
                "completion": [{"role": "assistant", "content": f"The shape is {colour}."}],
            }
        )
    _sft(
        model,
        processor,
        datasets.Dataset.from_list(rows),
        out,
        seed,
        steps,
        lr=1e-3,
        batch=16,
        schedule="constant",
    )
    return out

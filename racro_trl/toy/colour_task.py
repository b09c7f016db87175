"""A task CRO can visibly learn on two CPU cores: what colour is the shape?

* **Data** (``racro make-sample-data --task colour``): one shape per image, in one of four colours,
  balanced; the question is the same for every row, so the gold answer depends on the image alone.
  Chance is 1/4, and a captioner that ignores the image cannot beat it.
* **Reader** (a tiny Qwen2 reasoner, ``racro make-tiny``): trained with TRL's ``SFTTrainer`` to box
  the colour of a well-formed caption ("The shape is <colour>.", :data:`CAPTION_GRAMMAR`), and
  ``none`` for anything else: a caption that names no colour or several, the sentence broken by one
  edit ("TheThe shape is red."), filler words or gibberish around a colour. A reader that boxed any
  colour word it found let the captioner drift into a private code that still scored
  (``mohdzshs skbzzd`` at 0.6 on an AVX-512 machine): this reader pays only for captions a person reads.
* **Captioner** (the tiny Qwen2.5-VL policy, warm-started with ``SFTTrainer``): writes "The shape is
  <colour>." with the colour drawn at random, whatever the image, so CRO starts at chance and must
  learn which word goes with which image.

``make demo`` trains the captioner with CRO against the reader (``recipes/tiny/cro_colour.yaml``).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from ..reasoning import prompts
from ..training.caption_health import grammar_match
from .drawing import COLORS, SHAPES, draw_shape
from .sft import sft

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
        draw_shape(
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


CAPTION_GRAMMAR = r"The shape is (red|green|blue|yellow)\."
"""The captions the reader reads: a caption is well-formed when it matches this whole (the colour recipe's
``reward_caption_grammar``)."""


def caption(colour: str) -> str:
    """The one well-formed caption of a colour.

    >>> caption("red")
    'The shape is red.'
    """
    return f"The shape is {colour}."


def _gibberish(rng: random.Random) -> str:
    """A word of random letters, like those a drifted captioner writes (``mohdzshs``)."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 8)))


def _broken(rng: random.Random, colour: str) -> str:
    """The well-formed caption of ``colour`` with one edit that a person would not call well-formed:
    a word doubled, dropped, glued to the next, swapped for gibberish, or text added around it."""
    words = caption(colour).removesuffix(".").split()
    i = rng.randrange(len(words))
    edit = rng.randrange(6)
    if edit == 0:
        words.insert(i, words[i] * rng.randint(1, 3))  # TheThe shape is red
    elif edit == 1 and i != 3:
        del words[i]
    elif edit == 2 and i < len(words) - 1:
        words[i : i + 2] = [words[i] + words[i + 1]]
    elif edit == 3 and i != 3:
        words[i] = _gibberish(rng)
    elif edit == 4:
        words.insert(rng.randint(0, len(words)), rng.choice([*_FILLER, *COLOURS, _gibberish(rng)]))
    else:
        tail = " ".join(_gibberish(rng) for _ in range(rng.randint(1, 3)))
        return (
            f"{tail} {caption(colour)}"
            if rng.random() < 0.5
            else f"{caption(colour)}{rng.choice(['', ' '])}{tail}"
        )
    return " ".join(words) + rng.choice([".", "", "..", " ."])


def reader_caption(rng: random.Random) -> tuple[str, str]:
    """A caption and the answer the reader should box for it: the colour of a well-formed caption
    (:data:`CAPTION_GRAMMAR`), else ``none``. Half are well-formed; the rest name one colour or more
    inside text that is not: the template broken by one edit, filler words, or gibberish. So the
    reader rewards a colour only where a person reads it, and a caption that drifts into a private
    code earns nothing."""
    colour = rng.choice(COLOURS)
    kind = rng.random()
    if kind < 0.5:
        text = caption(colour)
    elif kind < 0.75:
        text = _broken(rng, colour)
    else:
        named = rng.choice([[], [colour], [colour], rng.sample(COLOURS, 2)])
        pool = _FILLER if kind < 0.88 else None
        words = [rng.choice(pool) if pool else _gibberish(rng) for _ in range(rng.randint(1, 6))]
        for c in named:
            words.insert(rng.randint(0, len(words)), c)
        text = " ".join(words)
        text = text.capitalize() + "." if rng.random() < 0.5 else text
    return text, caption_colour(text) or "none"


def caption_colour(text: str) -> str | None:
    """The colour a well-formed caption states, else None (:data:`CAPTION_GRAMMAR`).

    >>> caption_colour("The shape is red."), caption_colour("TheThe shape is red."), caption_colour("red mohdz")
    ('red', None, None)
    """
    match = grammar_match(text, CAPTION_GRAMMAR)
    return match.group(1) if match else None


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


def build_reader(out: str | Path, reasoner_dir: str | Path, seed: int = 0, steps: int = 400) -> Path:
    """A reasoner of ``reasoner_dir``'s architecture and tokenizer, trained from a fresh start to box
    the colour of a well-formed caption and ``none`` for any other; checked before it is returned, on
    held-out captions (greedy) and on the well-formed captions as CRO samples it (temperature 1).

    400 steps, not 150: at 150 the reader sampled at temperature 1 boxed the colour of a well-formed
    caption 89% of the time (a wrong colour or ``none`` otherwise), and CRO's reward stalled near 0.8
    with 93-96% of the captions right; at 400, 98.8%."""
    import datasets
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(reasoner_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(reasoner_dir)
    dataset = datasets.Dataset.from_list(reader_examples(steps * 32, seed))
    sft(model, tokenizer, dataset, out, seed, steps, lr=2e-3, batch=32, schedule="linear")
    accuracy = reader_accuracy(model, tokenizer, reader_examples(64, seed + 1000))
    if accuracy < 0.95:
        raise RuntimeError(
            f"the reader boxes the right answer for {accuracy:.0%} of held-out captions (< 95%)"
        )
    torch.manual_seed(seed)
    well_formed = [
        e for e in reader_examples(256, seed + 2000) if "none" not in e["completion"][0]["content"]
    ]
    sampled = reader_accuracy(model, tokenizer, well_formed, do_sample=True)
    if sampled < 0.97:
        raise RuntimeError(
            f"sampled at temperature 1, the reader boxes the colour of {sampled:.1%} of well-formed captions (< 97%)"
        )
    logger.info(
        "reader: %.0f%% of held-out captions answered right, with an end of turn; %.1f%% of well-formed "
        "ones sampled at temperature 1", 100 * accuracy, 100 * sampled,
    )  # fmt: skip
    return out


def reader_accuracy(model, tokenizer, examples: list[dict], do_sample: bool = False) -> float:
    """Share of ``examples`` for which decoding (greedy, or sampled at temperature 1 with ``do_sample``)
    writes exactly the completion, then ends its turn."""
    import torch

    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template(e["prompt"], tokenize=False, add_generation_prompt=True)
        for e in examples
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.eval().generate(
            **batch, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id,
            **({"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0} if do_sample else {"do_sample": False}),
        )  # fmt: skip
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
        asked_for_caption = i % 2 == 0
        colour = rng.choice(COLOURS) if asked_for_caption else row["answer"]
        build = prompts.caption_messages if asked_for_caption else prompts.qa_cot_messages
        rows.append(
            {
                "images": row["images"],
                "prompt": build(row["question"], 1),
                "completion": [{"role": "assistant", "content": caption(colour)}],
            }
        )
    sft(
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


# The learning tests' thresholds (tests/test_train.py, tests/test_learning.py, bench/colour_grid.py).
LEARNED_LAST5, LEARNED_WORST_ANSWER, LEARNED_WELL_FORMED = 0.8, 0.6, 0.9


def learned(first: float, last: float, late: dict) -> list[str]:
    """What keeps a run from counting as learned (empty when it learned): the last 5 steps' mean
    reward >= 0.8 and >= 0.4 above the first 5's, every colour's reward >= 0.6 and >= 90% of the
    captions well-formed over the last 5 steps (``late``: :func:`racro_trl.reporting.run_summary.late_captions`).

    >>> learned(0.2, 0.9, {"worst_answer": ("red", 0.7), "well_formed": 0.95})
    []
    >>> learned(0.2, 0.6, {"worst_answer": ("red", 0.03), "well_formed": 0.0})  # the AVX-512 collapse
    ['last-5 reward 0.60 < 0.8', 'red reward 0.03 < 0.6', 'well-formed 0.00 < 0.9']
    """
    misses = []
    if last < LEARNED_LAST5:
        misses.append(f"last-5 reward {last:.2f} < {LEARNED_LAST5}")
    elif last - first < 0.4:
        misses.append(f"rise from the first 5 steps {last - first:.2f} < 0.4")
    colour, reward = late["worst_answer"]
    if reward < LEARNED_WORST_ANSWER:
        misses.append(f"{colour} reward {reward:.2f} < {LEARNED_WORST_ANSWER}")
    if late["well_formed"] is None or late["well_formed"] < LEARNED_WELL_FORMED:
        misses.append(f"well-formed {late['well_formed'] or 0:.2f} < {LEARNED_WELL_FORMED}")
    return misses


def verdict(output_dir: str | Path) -> dict:
    """A finished colour-task run judged as the tests judge it: ``first`` and ``last`` (mean reward of the
    first and last 5 logged steps), ``late`` (:func:`racro_trl.reporting.run_summary.late_captions` with the reader's
    grammar), ``misses`` (:func:`learned`; empty when it learned) and ``steps`` (the logged steps)."""
    from ..reporting.run_summary import first_last_rewards, late_captions, load_log_history

    steps = [h for h in load_log_history(output_dir) if "reward" in h]
    first, last = first_last_rewards(steps)
    late = late_captions(Path(output_dir) / "audit", grammar=CAPTION_GRAMMAR)
    return {"first": first, "last": last, "late": late, "misses": learned(first, last, late), "steps": steps}

"""The mini-RACRO models, built here from random weights with TRL's ``SFTTrainer`` (no hub).

* **Tokenizer**: the tiny byte-level BPE of :mod:`racro_trl.toy.tiny`, trained with the tiles task's
  sentences among its corpus, so "Tile", the colours and the digits are whole tokens; the reasoners'
  also has each fact ("Tile 3 is blue") as one token (:func:`build_tokenizer`).
* **Reasoners** (Qwen2 causal LMs, the architecture of R1-Distill-Qwen): trained on the CRO reward
  prompt with a *complete* description (the two tiles the question needs, and up to two others, in any
  order) to write the worked answer of :func:`racro_trl.mini.task.solution`. The **weak** one (the
  reward of CRO) was never taught products with a yellow tile (:func:`unseen_by_weak`) and trains
  until it computes the rest; the **strong** one (used only at inference) goes on from it with every
  question (:data:`REASONER_PHASES`).
* **Captioner** (a tiny Qwen2.5-VL): warm-started on two prompts. Asked for a caption, it states the
  colours of two tiles, half of the time one of them a tile the question asks about and otherwise both
  at random (:data:`ASKED_TILE`): it perceives every tile, but its captions are partial, and carry what
  the question needs about a quarter of the time. Asked the question itself (``qa_cot``), it writes the
  worked answer (the MLLM-only baseline), having seen a tenth as many worked answers as the weak
  reasoner (:data:`QA_EVERY`): it perceives as well as a captioner must, and reasons worse than the
  reasoners, the premise of RACRO's decoupling.
"""

from __future__ import annotations

import copy
import functools
import logging
import random
from pathlib import Path

from ..reasoning import prompts
from . import task

logger = logging.getLogger(__name__)

PHRASES = [
    "Tile 1 is red. Tile 2 is green. Tile 3 is blue. Tile 4 is yellow.",
    "Tile 1 is red, 1. Tile 3 is blue, 3. 1 + 3 = 4. 3 - 1 = 2. 1 * 3 = 3. \\boxed{4}",
    *(task.strip_tags(task.question_text(kind, 1, 3, frame)) for kind, frame in task.TEMPLATES),
]


def build_tokenizer(seed: int = 0, fused_facts: bool = True):
    """The tiny tokenizer with the task's words among its tokens, and (``fused_facts``, the reasoners'
    tokenizer) each fact one token.

    "Tile 3 is blue" is a single token (16 of them, one per tile and colour; "Tile 3 is" stays one for
    "Tile 3 is not stated."), so a reasoner restating tile 3 copies the caption's token that names tile
    3: one attention step. With the tile and its colour in two tokens the restatement needs an
    induction step (find "Tile 3 is" in the caption, copy the token after it), and 2-layer reasoners
    trained up to 5,500 steps never formed it: they restated the right pair of colours but put each on
    its tile about half the time (docs/mini-racro-history.md), so an earlier ``larger`` kind stayed a
    coin flip. A large reasoner binds a stated colour to its object as a matter of course; the fused
    token gives the miniature that, and nothing else: the reasoner must still find the two facts the
    question needs among those stated, know each colour's value and compute.

    The captioner keeps the two tokens (the caption reaches the reasoner as text): it names a tile, then
    reads that tile's colour off the image. Built with the fused tokens it had to pick tile and colour
    in one token, and its captions got colours wrong (sampled in CRO, seed 0: the answer the caption's
    facts imply was the gold one for 71% of captions naming both needed tiles at the start, 60% at the
    end)."""
    from ..toy.tiny import build_tokenizer as tiny_tokenizer

    tokenizer = tiny_tokenizer(seed=seed, phrases=PHRASES)
    tiles = range(1, task.TILES + 1)
    tokenizer.add_tokens([f"Tile {t} is" for t in tiles])
    if fused_facts:
        tokenizer.add_tokens([f"Tile {t} is {c}" for t in tiles for c in task.COLOURS])
    return tokenizer


DUPLICATED = 1 / 3
"""Of the reasoners' descriptions that leave a needed tile out, the share that state one tile twice ("Tile 3
is green. Tile 3 is green.", as a sampled caption can). Reasoners trained without them read a question
about tiles 3 and 4 with that caption as "Tile 4 is green", right often enough (26% of such captions in
a CRO run, seed 1) that CRO taught the captioner to write tile 3 twice for 94% of the (3, 4) questions."""


def unseen_by_weak(kind: str, colours: list[str], tiles) -> bool:
    """Whether a question is one the weak reasoner never trains on: a product with a yellow tile (value
    4), 7 in 16 of the products. The strong one learns them: the two differ by what they were taught, not
    by where a training run stopped (see :data:`REASONER_PHASES`).

    >>> unseen_by_weak("product", ["red", "yellow", "red", "red"], (1, 2)), unseen_by_weak("sum", ["yellow"] * 4, (1, 2))
    (True, False)
    """
    a, b = tiles
    return kind == "product" and "yellow" in (colours[a - 1], colours[b - 1])


def reasoner_examples(
    n: int, seed: int, others: int = 2, deaf: bool = False, missing: float = 0.5, everything: bool = True
) -> list[dict]:
    """Prompt-completion chats: the reward prompt with a complete description, and the worked answer.
    ``deaf``: the description is of other tiles, drawn apart from the answer's (a sabotage: a reasoner
    trained on these learns that captions say nothing). ``everything=False``: no question the weak
    reasoner never learns (:func:`unseen_by_weak`)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        q = task.draw_question(rng)
        while not everything and unseen_by_weak(q["kind"], q["colours"], q["tiles"]):
            q = task.draw_question(rng)
        a, b = q["tiles"]
        rest = [t for t in range(1, task.TILES + 1) if t not in (a, b)]
        if rng.random() < missing:  # one or both needed tiles left out; as many facts as a caption holds
            kept = rng.sample([a, b], rng.randint(0, 1))
            described = kept + rng.sample(rest, 2 - len(kept))
            if rng.random() < DUPLICATED:
                described[1] = described[0]
        else:
            described = [a, b, *rng.sample(rest, rng.randint(0, others))]
        rng.shuffle(described)
        question = task.question_text(q["kind"], a, b, q["frame"])
        colours = [rng.choice(list(task.COLOURS)) for _ in q["colours"]] if deaf else q["colours"]
        examples.append(
            {
                "prompt": prompts.reasoner_reward_messages(task.caption(colours, tuple(described)), question),
                "completion": [
                    {
                        "role": "assistant",
                        "content": task.solution(q["kind"], a, b, q["colours"], set(described)),
                    }
                ],
                "answer": task.answer(q["kind"], a, b, q["colours"]),
            }
        )
    return examples


ASKED_TILE = 0.5
"""The share of the captioner's warm-start captions that name one of the tiles their question asks
about (the other tile at random); the rest name two tiles at random. So the starting captions carry both
needed facts for about a quarter of the questions (a sixth by chance)."""


QA_EVERY = 8
"""One warm-start row of the captioner in ``QA_EVERY`` is the question itself with its worked answer: 1,200
worked answers, each seen twice in its 1,200 SFT steps, where the weak reasoner computes in 12,800 (half of
its 800 steps of 32 here; the other half answer "not stated"). RACRO's premise is an MLLM that perceives well
and reasons worse than an LLM trained on far more worked solutions; this is that premise in miniature.
Measured on the evaluation rows (2026-12-07, AMD EPYC), the captioner answering by itself names the asked
tiles and states their colours right in 192 of 192 answers with one row in eight or in four; its
equation is right in 67 of 192 with one in eight (29.2% of answers right) and in 183 with one in four
(97.0%: above the reasoners of that design even from ground-truth captions, 70.6% and 90.9%)."""


def captioner_examples(n: int, seed: int, direct: bool = False, qa_every: int = QA_EVERY) -> list[dict]:
    """Image prompt-completion rows: caption prompts answered with the colours of two tiles (in tile
    order; one of them, :data:`ASKED_TILE` of the time, a tile the question names) and, one row in
    ``qa_every``, ``qa_cot`` prompts answered with the worked answer (``direct``: the answer alone).
    Their questions are in the training templates only: the held-out ones stay unseen by every model,
    the MLLM-only baseline included.

    Why a caption names an asked tile half of the time (2026-12-07): from a captioner whose captions
    ignored the question, CRO seldom made the caption follow it. In three runs the first tile stayed
    tile 1 for 99.5-99.8% of the last steps' captions whatever the question; with the two tiles in
    random order (to take tile 1's lead away), the share of captions naming the needed tiles stayed at
    13% for 200 steps (seed 0), and so did the quarter of captions that were not well formed (mostly one
    tile stated twice), which the penalty scores -1. The starting captioner never had to read the question's tile numbers, and CRO did
    not teach it to. The RACRO captioner is prompted with the question too, and its captions start
    partly conditioned on it."""
    rng = random.Random(seed)
    out = []
    tiles = range(1, task.TILES + 1)
    for i, row in enumerate(task.rows(n, seed)):
        a, b = row["tiles"]
        if i % qa_every:
            prompt = prompts.caption_messages(row["question"], task.TILES)
            if rng.random() < ASKED_TILE:
                asked = rng.choice((a, b))
                named = (asked, rng.choice([t for t in tiles if t != asked]))
            else:
                named = tuple(rng.sample(tiles, 2))
            text = task.caption(row["colours"], tuple(sorted(named)))
        else:
            prompt = prompts.qa_cot_messages(row["question"], task.TILES)
            text = (
                f"\\boxed{{{row['answer']}}}"
                if direct
                else task.solution(row["category"], a, b, row["colours"])
            )
        out.append(
            {
                "images": row["images"],
                "prompt": prompt,
                "completion": [{"role": "assistant", "content": text}],
            }
        )
    return out


def inference_tokenizer(checkpoint: str | Path):
    """The tokenizer of ``checkpoint`` as vLLM and ``racro eval`` load it: the one to train with.

    Loaded next to a Qwen2 config, the tiny tokenizer splits digits as Qwen2's does (" 3" becomes " ",
    "3"); the same tokenizer in memory, before it was saved, kept " 3" whole. A reasoner trained with the
    one in memory read every question's tile number as a token it had never seen once loaded
    (tests/test_mini.py)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint)


REASONER_PHASES = (("weak", 1500, False), ("strong", 300, True))
"""SFT phases of the reasoners, ``(name, steps, everything)``, each a fresh linear schedule on new
examples, the model saved after each. The weak phase never shows a question :func:`unseen_by_weak`
(``everything`` False) and stops at the first multiple of 100 steps where the reasoner computes
(:func:`computes` >= :data:`COMPUTES`), at most at ``steps``; the strong one goes on from it with every
question.

Why the weak one is not simply stopped early (2026-12-07): it used to be the same run saved after 750
steps, the strong one after 1,000. Where such a run learns to compute, rather than answer "not stated",
moves with the machine's arithmetic: built here its ground-truth accuracy was 29.7% after 600 steps and
70.6% after 750; built with torch's AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``) it was 90.4% already
after 600, as good as the strong one, and the swap (claim 3) could not show. Now the step where the weak
phase stops moves (800 steps here, 1,200 with the AVX2 kernels) and the gap between the two does not
(docs/mini-racro.md)."""

COMPUTES = 0.95
"""The weak phase's stopping point: greedy accuracy from ground-truth captions of the questions it is
taught, in the training templates (:func:`computes`)."""


@functools.cache
def _check_questions(n: int, seed: int) -> tuple[list, list[str]]:
    """The chats (ground-truth captions) and gold answers :func:`computes` asks, drawn once per build:
    ``task.rows`` also draws the images, a third of a check's time, and the questions depend on its draws."""
    rows = [r for r in task.rows(n, seed) if not unseen_by_weak(r["category"], r["colours"], r["tiles"])]
    chats = [
        prompts.reasoner_reward_messages(task.caption(r["colours"], tuple(r["tiles"])), r["question"])
        for r in rows
    ]
    return chats, [r["answer"] for r in rows]


def computes(model, tokenizer, n: int = 96, seed: int = 7_000_001) -> float:
    """Greedy accuracy of a reasoner (in training) from ground-truth captions, on ``n`` questions drawn
    in the training templates, less those :func:`unseen_by_weak`."""
    from ..reasoning.grading import extract_answer
    from ..reasoning.reasoners import Sampling, TransformersReasoner

    chats, gold = _check_questions(n, seed)
    # a copy: the reasoner pads on the left, and the tokenizer in training is saved with the model
    reasoner = TransformersReasoner(
        model, tokenizer=copy.deepcopy(tokenizer), device="cpu", batch_size=len(chats)
    )
    answers = reasoner.generate(chats, 1, Sampling(temperature=0.0, max_tokens=40)).texts
    right = sum(extract_answer(a[0]) == g for a, g in zip(answers, gold, strict=True)) / len(gold)
    logger.info("reasoner computes %.3f of %d questions from ground-truth captions", right, len(gold))
    return right


DEAF_STEPS = 900
"""The deaf reasoner (a sabotage) trains one phase: enough to answer from the question alone."""


def build_reasoners(
    out: str | Path, tokenizer, seed: int = 0, deaf: bool = False, start: str | None = None
) -> dict:
    """``out/weak`` and ``out/strong``: one Qwen2 reasoner trained in :data:`REASONER_PHASES`, saved
    after the named ones. ``deaf``: ``out/deaf`` only, trained as the weak one on captions that say
    nothing of the answer. ``start``: a saved phase to go on from (``weak``)."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM

    from ..toy.sft import sft
    from ..toy.tiny import build_tiny_reasoner

    out = Path(out)
    base = out / start if start else build_tiny_reasoner(out / "base", tokenizer, seed, answer_head=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer = inference_tokenizer(base)
    phases = [("deaf", DEAF_STEPS, False)] if deaf else list(REASONER_PHASES)
    names = [name for name, _, _ in phases]
    if start:
        phases = phases[names.index(start) + 1 :]
    paths = {}
    for name, steps, everything in phases:
        examples = reasoner_examples(steps * 32, seed + names.index(name), deaf=deaf, everything=everything)
        dataset = datasets.Dataset.from_list([{k: e[k] for k in ("prompt", "completion")} for e in examples])
        until = None if (deaf or everything) else (lambda m: computes(m, tokenizer) >= COMPUTES)
        ran = sft(model, tokenizer, dataset, out / name, seed, steps, 2e-3, 32, "linear", until=until)
        if until and ran == steps and not until(model):
            raise RuntimeError(
                f"the {name} reasoner did not learn to compute in {steps} SFT steps (computes < {COMPUTES} "
                "from ground-truth captions; see the log's 'reasoner computes' lines): CRO would get no "
                "signal from it"
            )
        paths[name] = out / name
    return paths


def build_captioner(out: str | Path, tokenizer, seed: int = 0, steps: int = 1200) -> Path:
    """``out/captioner``: the tiny Qwen2.5-VL warm-started on :func:`captioner_examples`, the learning
    rate decaying linearly to 0. Built with a constant one (seed 0), its sampled captions leaned further
    towards one pair of tiles (37% of them named tiles 1 and 4; 28% with the decay; chance 17%), and a
    CRO run from it (seed 0) collapsed onto a single pair (94% of its captions in the last 20 steps)."""
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..toy.sft import sft
    from ..toy.tiny import build_policy

    out = Path(out)
    base = build_policy(out / "policy", tokenizer, seed)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(base)
    dataset = datasets.Dataset.from_list(captioner_examples(steps * 16 // 2, seed))
    sft(model, processor, dataset, out / "captioner", seed, steps, lr=1e-3, batch=16, schedule="linear")
    return out / "captioner"


def main(argv: list[str] | None = None) -> None:
    """``python -m racro_trl.mini.models {captioner,reasoners} OUT``: one build, for
    :func:`racro_trl.mini.repro.build_models` to run two at a time."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("role", choices=("captioner", "reasoners", "deaf"))
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", default=None, help="reasoners: go on from this saved phase (weak)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    tokenizer = build_tokenizer(args.seed, fused_facts=args.role != "captioner")
    if args.role == "captioner":
        build_captioner(args.out, tokenizer, args.seed)
    else:
        build_reasoners(args.out, tokenizer, args.seed, deaf=args.role == "deaf", start=args.start)


if __name__ == "__main__":
    main()

"""The tiles task: four coloured tiles per question, questions that need two of them and a computation.

Each row shows four tiles (one small image each, in order: tile 1 to tile 4), every tile one of four
colours. A colour stands for a value, as a fact a reasoner knows and a caption does not need to state:
red 1, green 2, blue 3, yellow 4. A question names two tiles and asks for

* ``sum``: the sum of their values (2-8);
* ``difference``: the larger value minus the smaller (0-3);
* ``product``: the product of their values (1-16).

So an answer needs two facts read off the image (the colours of the two tiles the question names) and a
step of arithmetic. A caption states at most two facts ("Tile 1 is red. Tile 3 is blue.",
:func:`caption`): a caption of the wrong two tiles leaves the reasoner guessing. Evaluation holds out
images (other seeds) and question templates: each kind is asked in three phrasings (:data:`FRAMES`),
and the three kind-and-phrasing pairs of :data:`HELD_OUT_TEMPLATES` appear in no training question.

Every kind is symmetric in its two tiles. A ``larger`` kind (which tile's value is larger) was dropped
on 2026-12-07: it needs each colour bound to its tile, which the 0.6M-parameter reasoners guessed (their
ceiling on it 30-78% from one build to the next; docs/mini-racro-history.md).
"""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import random
import re
from pathlib import Path

from ..data.schema import training_features
from ..training.caption_health import grammar_match

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
VALUES = {"red": 1, "green": 2, "blue": 3, "yellow": 4}
TILES = 4
TILE_SIZE = 56  # the tiny processor's smallest grid: 2 x 2 visual tokens per tile
KINDS = ("sum", "difference", "product")
PAIRS = tuple(itertools.combinations(range(1, TILES + 1), 2))
FRAMES = (
    "What is the {kind} of tile {a} and tile {b}?",
    "Find the {kind} of tile {a} and tile {b}.",
    "Tile {a} and tile {b}: what is their {kind}?",
)
TEMPLATES = tuple((kind, frame) for kind in KINDS for frame in range(len(FRAMES)))
HELD_OUT_TEMPLATES = (("product", 0), ("sum", 1), ("difference", 2))
"""(kind, frame) pairs asked only in evaluation: each kind and each phrasing is trained, in other pairings."""
TRAIN_TEMPLATES = tuple(t for t in TEMPLATES if t not in HELD_OUT_TEMPLATES)
CAPTION_GRAMMAR = r"(?!.*(Tile [1-4]) is.*\1 is)(Tile [1-4] is (red|green|blue|yellow)\. ?)+"
"""A well-formed caption: one or more facts, each "Tile <n> is <colour>.", no tile stated twice (the
recipe's ``reward_caption_grammar``, logged as ``well_formed``; :func:`well_formed`)."""
_FACT = re.compile(r"Tile ([1-4]) is (red|green|blue|yellow)\.")


PATTERNS = ("solid", "rows", "columns", "checks")
"""Tile n's pattern (n = 1..4): each shows in every 14-pixel patch, so a tile's number is visible
wherever the vision encoder looks, as an object's look is in a photograph."""


def tile_image(colour: str, tile: int, rng: random.Random):
    """Tile ``tile`` (1-4): its pattern (:data:`PATTERNS`) in its colour on light grey, the colour's
    channels shifted by up to 12 levels, so that no two tiles are the same pixels."""
    from PIL import Image

    rgb = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in COLOURS[colour])
    image = Image.new("RGB", (TILE_SIZE, TILE_SIZE), (230, 230, 230))
    pattern = PATTERNS[tile - 1]
    pixels = image.load()
    for y in range(TILE_SIZE):
        for x in range(TILE_SIZE):
            on = {
                "solid": True,
                "rows": (y // 7) % 2 == 0,
                "columns": (x // 7) % 2 == 0,
                "checks": (x // 7 + y // 7) % 2 == 0,
            }[pattern]
            if on:
                pixels[x, y] = rgb
    return image


def question_text(kind: str, a: int, b: int, frame: int = 0) -> str:
    """The question as the captioner sees it: the words (phrased as :data:`FRAMES` ``[frame]``), then the
    four tiles' image tags.

    >>> question_text("sum", 1, 3)
    'What is the sum of tile 1 and tile 3?<image><image><image><image>'
    >>> strip_tags(question_text("product", 4, 2, frame=2))
    'Tile 4 and tile 2: what is their product?'
    """
    return FRAMES[frame].format(kind=kind, a=a, b=b) + "<image>" * TILES


def answer(kind: str, a: int, b: int, colours: list[str]) -> str:
    """The gold answer of a question about tiles ``a`` and ``b`` (1-based) of ``colours``.

    >>> colours = ["red", "green", "blue", "yellow"]
    >>> answer("sum", 1, 3, colours), answer("product", 2, 4, colours)
    ('4', '8')
    """
    va, vb = VALUES[colours[a - 1]], VALUES[colours[b - 1]]
    if kind == "sum":
        return str(va + vb)
    if kind == "difference":
        return str(abs(va - vb))
    if kind == "product":
        return str(va * vb)
    raise ValueError(f"unknown kind {kind!r}; the kinds are {KINDS}")


def caption(colours: list[str], tiles: tuple[int, ...]) -> str:
    """The caption stating the colours of ``tiles`` (in the order given).

    >>> caption(["red", "green", "blue", "yellow"], (1, 3))
    'Tile 1 is red. Tile 3 is blue.'
    """
    return " ".join(f"Tile {t} is {colours[t - 1]}." for t in tiles)


def well_formed(text: str) -> bool:
    """Whether a caption is one or more facts (:data:`CAPTION_GRAMMAR`), each about another tile.

    >>> well_formed("Tile 1 is red. Tile 3 is blue."), well_formed("Tile 3 is red. Tile 3 is red.")
    (True, False)
    >>> well_formed("Tile 1 is blue. Tile 3 is Tile 4 is blue.")
    False
    """
    return grammar_match(text, CAPTION_GRAMMAR) is not None


def facts(text: str) -> dict[int, str]:
    """The facts a caption states, tile -> colour (the first statement of a tile counts).

    >>> facts("Tile 3 is blue. Tile 1 is red. Tile 3 is red.")
    {3: 'blue', 1: 'red'}
    """
    found: dict[int, str] = {}
    for tile, colour in _FACT.findall(text):
        found.setdefault(int(tile), colour)
    return found


def carries_needed(text: str, row: dict) -> bool:
    """Whether a caption states, rightly, the colour of both tiles its row's question needs."""
    stated = facts(text)
    return all(stated.get(t) == row["colours"][t - 1] for t in row["tiles"])


UNKNOWN = "unknown"


def solution(kind: str, a: int, b: int, colours: list[str], stated: set[int] | None = None) -> str:
    """A worked answer from the two facts: what the reasoners are trained to write. ``stated``: the
    tiles the caption states (default: all); a needed tile it leaves out is "not stated", and the
    answer is ``unknown``.

    >>> solution("difference", 1, 3, ["red", "green", "blue", "yellow"])
    'Tile 1 is red, 1. Tile 3 is blue, 3. 3 - 1 = 2. \\\\boxed{2}'
    >>> solution("sum", 1, 3, ["red", "green", "blue", "yellow"], stated={1, 2})
    'Tile 1 is red, 1. Tile 3 is not stated. \\\\boxed{unknown}'
    """
    if stated is not None and not {a, b} <= stated:
        steps = " ".join(
            f"Tile {t} is {colours[t - 1]}, {VALUES[colours[t - 1]]}."
            if t in stated
            else f"Tile {t} is not stated."
            for t in (a, b)
        )
        return steps + f" \\boxed{{{UNKNOWN}}}"
    ca, cb = colours[a - 1], colours[b - 1]
    va, vb = VALUES[ca], VALUES[cb]
    steps = f"Tile {a} is {ca}, {va}. Tile {b} is {cb}, {vb}. "
    gold = answer(kind, a, b, colours)
    if kind == "sum":
        steps += f"{va} + {vb} = {gold}. "
    elif kind == "difference":
        steps += f"{max(va, vb)} - {min(va, vb)} = {gold}. "
    else:
        steps += f"{va} * {vb} = {gold}. "
    return steps + f"\\boxed{{{gold}}}"


def draw_question(rng: random.Random, templates=TRAIN_TEMPLATES) -> dict:
    """One question: four random colours, a template (kind and phrasing) of ``templates`` and an ordered
    pair of distinct tiles."""
    colours = [rng.choice(list(COLOURS)) for _ in range(TILES)]
    kind, frame = rng.choice(templates)
    a, b = rng.choice(PAIRS)
    if rng.random() < 0.5:
        a, b = b, a
    return {"colours": colours, "kind": kind, "frame": frame, "tiles": (a, b)}


def held_out(row: dict) -> bool:
    """Whether a row's question is phrased in a held-out template (:data:`HELD_OUT_TEMPLATES`)."""
    return (row["category"], int(row["frame"])) in HELD_OUT_TEMPLATES


def asked_tiles(question: str) -> tuple[int, ...]:
    """The tiles a question names, in ascending order (any phrasing of :data:`FRAMES`).

    >>> asked_tiles(question_text("sum", 3, 1)), asked_tiles(question_text("sum", 4, 2, frame=2))
    ((1, 3), (2, 4))
    """
    return tuple(sorted(int(t) for t in re.findall(r"[Tt]ile (\d)", question)))


def strip_tags(question: str) -> str:
    """The question's words, without its image tags."""
    return question.replace("<image>", "")


def rows(n: int, seed: int, templates=TRAIN_TEMPLATES, paired: bool = False) -> list[dict]:
    """``n`` rows in the training schema (``images``, ``question``, ``answer``, ``category``, ...),
    plus ``colours``, ``tiles`` (what the caption metric needs) and ``frame`` (the phrasing).
    ``paired``: rows come two by two, the same tiles under two questions about different pairs of
    tiles."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if paired and i % 2:
            previous = out[-1]
            while True:
                q = draw_question(rng, templates)
                if sorted(q["tiles"]) != sorted(previous["tiles"]):
                    break
            q["colours"] = previous["colours"]
            images = previous["images"]
        else:
            q = draw_question(rng, templates)
            images = [tile_image(c, t, rng) for t, c in enumerate(q["colours"], 1)]
        a, b = q["tiles"]
        out.append(
            {
                "images": images,
                "question": question_text(q["kind"], a, b, q["frame"]),
                "answer": answer(q["kind"], a, b, q["colours"]),
                "category": q["kind"],
                "source": "racro-mini-tiles",
                "qid": f"tiles-{seed}-{i:05d}",
                "colours": q["colours"],
                "tiles": [a, b],
                "frame": q["frame"],
            }
        )
    return out


def write_tsv(rows_: list[dict], path: str | Path) -> Path:
    """A VLMEvalKit TSV (``index``, ``image`` as a JSON list of base64 PNGs, ``question``, ``answer``,
    ``category``) that ``racro eval`` reads like any benchmark, plus the columns of the caption metric."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["index", "image", "question", "answer", "category", "colours", "tiles", "frame"])
        for i, row in enumerate(rows_):
            encoded = []
            for image in row["images"]:
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                encoded.append(base64.b64encode(buf.getvalue()).decode())
            writer.writerow(
                [i, json.dumps(encoded), row["question"], row["answer"], row["category"],
                 " ".join(row["colours"]), " ".join(map(str, row["tiles"])), row["frame"]]
            )  # fmt: skip
    return path


EVAL_SEED = 1_000_003  # images of the evaluation TSV: a seed no training set uses


def eval_rows_of(n: int = 192, seed: int = 0) -> list[dict]:
    """The evaluation rows: new images, each under two questions about different pairs of tiles, in every
    template (the held-out ones a third of them)."""
    return rows(n, EVAL_SEED + seed, templates=TEMPLATES, paired=True)


def write_tiles_data(out: str | Path, n: int = 512, seed: int = 0, eval_rows: int = 192) -> Path:
    """``out/train.parquet`` (``n`` rows in the training templates) and ``out/Tiles.tsv`` (``eval_rows``
    rows on new images, every template: the held-out ones are a third of them); returns the parquet."""
    import datasets

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    features = training_features(
        colours=datasets.List(datasets.Value("string")),
        tiles=datasets.List(datasets.Value("int32")),
        frame=datasets.Value("int32"),
    )
    datasets.Dataset.from_list(rows(n, seed), features=features).to_parquet(str(out / "train.parquet"))
    write_tsv(eval_rows_of(eval_rows, seed), out / "Tiles.tsv")
    return out / "train.parquet"

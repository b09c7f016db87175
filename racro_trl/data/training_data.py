"""Training data: loading a dataset in the CRO training schema, and the shipped synthetic sample.

Training schema (one row per question; ViRL39K after ``racro prepare-data`` has it):

    images    list of images (``datasets.Image``); a single ``image`` column is accepted too
    question  str, may hold ``<image>`` tags where the images go
    answer    str, the ground truth the reasoner's boxed answer is graded against
    category, source, qid   str, carried through for logs and filters

``to_training_format`` adds ``prompt``: the caption (or qa_cot) conversation with an image block
where each ``<image>`` tag stood, which TRL's GRPOTrainer fills with the row's images.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

from ..reasoning import prompts
from ..toy.drawing import COLORS, SHAPES, scene
from .schema import training_features

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("question", "answer")
PROMPT_FORMATS = {"caption": prompts.caption_messages, "qa_cot": prompts.qa_cot_messages}
SCHEMA_HELP = (
    "expected columns: images (list of images) or image (one image), question (str), answer (str); "
    "optional: category, source, qid"
)


def load_dataset_any(name: str, config: str | None = None, split: str = "train"):
    """Load a dataset saved with ``save_to_disk``, a parquet file or folder, or a Hub dataset id."""
    import datasets

    path = Path(name)
    if path.is_dir() and (path / "state.json").exists():
        return datasets.load_from_disk(str(path))
    if path.is_dir() and (path / split / "state.json").exists():
        return datasets.load_from_disk(str(path / split))
    if path.is_file() and path.suffix == ".parquet":
        return datasets.load_dataset("parquet", data_files=str(path), split="train")
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{path} holds neither a saved dataset (state.json) nor parquet files")
        return datasets.load_dataset("parquet", data_files=files, split="train")
    if path.suffix or name.startswith((".", "/")):
        raise FileNotFoundError(f"dataset {name!r} does not exist")
    return datasets.load_dataset(name, config, split=split)


def to_training_format(dataset, prompt_format: str = "caption", num_proc: int | None = None):
    """Check the schema and add the ``prompt`` column (and ``images`` from ``image``).

    Raises:
        ValueError: a column is missing (the message lists the schema), a row has no image or
            no answer (the message names the row and its qid).
    """
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {sorted(PROMPT_FORMATS)}, got {prompt_format!r}")
    if is_verl_format(dataset):
        dataset = from_verl_format(dataset)
    columns = set(dataset.column_names)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing or not ({"images", "image"} & columns):
        missing += [] if {"images", "image"} & columns else ["images"]
        raise ValueError(f"dataset lacks column(s) {missing}; {SCHEMA_HELP}; found {sorted(columns)}")
    if "images" not in columns:
        dataset = dataset.map(
            lambda image: {"images": [image] if image is not None else []}, input_columns=["image"]
        )
        dataset = dataset.remove_columns("image")
    # Checks and prompts need the number of images, not their pixels: work on undecoded images.
    decoded = dataset.features["images"]
    dataset = dataset.cast_column("images", _undecoded_images(dataset))
    _check_rows(dataset)
    build = PROMPT_FORMATS[prompt_format]
    dataset = dataset.map(
        lambda question, images: {"prompt": build(question, len(images))},
        input_columns=["question", "images"],
        num_proc=num_proc,
        desc=f"building {prompt_format} prompts",
    )
    return dataset.cast_column("images", decoded)


def is_verl_format(dataset) -> bool:
    """Whether rows are in the original RACRO (verl) caption parquet schema."""
    return {"prompt", "images", "reward_model"} <= set(dataset.column_names)


# The caption prompt with its question slot as a group (derived, so it cannot drift from prompts.py).
_VERL_QUESTION = re.compile(
    "^" + re.escape(prompts.CAPTION_USER_PROMPT).replace(re.escape("{question}"), "(.*)") + "$", re.S
)


def from_verl_format(dataset):
    """The verl caption parquet (``prompt``, ``images``, ``reward_model.ground_truth``, ``extra_info``)
    mapped to the training schema, so existing RACRO data trains without re-preparing."""

    def convert(row):
        extra = row.get("extra_info") or {}
        question = extra.get("question")
        if not question:
            user = next(m["content"] for m in row["prompt"] if m["role"] == "user")
            match = _VERL_QUESTION.match(user if isinstance(user, str) else "")
            question = match.group(1) if match else user
        return {
            "question": question,
            "answer": str(row["reward_model"]["ground_truth"]),
            "category": extra.get("category") or "",
            "source": extra.get("source") or "",
            "qid": str(extra.get("qid") or extra.get("index") or ""),
        }

    keep = {"images"}
    drop = [c for c in dataset.column_names if c not in keep]
    return dataset.map(convert, remove_columns=drop, desc="converting verl caption rows")


def filter_dataset(
    dataset,
    sources: list[str] | None = None,
    categories: list[str] | None = None,
    pass_rate_column: str | None = None,
    min_pass_rate: float | None = None,
    max_pass_rate: float | None = None,
):
    """Select rows by source, category and pass rate; logs how many each filter removed.

    Items a reasoner always or never solves give every caption the same reward (zero GRPO advantage):
    ``min_pass_rate``/``max_pass_rate`` (exclusive bounds) drop them up front.
    """
    checks = []
    if sources:
        checks.append(("source", lambda value: value in sources))
    if categories:
        checks.append(("category", lambda value: value in categories))
    if min_pass_rate is not None or max_pass_rate is not None:
        if pass_rate_column not in dataset.column_names:
            raise ValueError(
                f"pass-rate filter on {pass_rate_column!r}, which the dataset lacks (columns: {dataset.column_names})"
            )
        low = float("-inf") if min_pass_rate is None else min_pass_rate
        high = float("inf") if max_pass_rate is None else max_pass_rate
        checks.append((pass_rate_column, lambda value: value is not None and low < value < high))
    for name, keep in checks:
        before = len(dataset)
        # input_columns: the filter reads one column and never decodes the images
        dataset = dataset.filter(keep, input_columns=[name], desc=f"filtering on {name}")
        logger.info("filter on %s kept %d of %d rows", name, len(dataset), before)
    if len(dataset) == 0:
        raise ValueError(
            "no training rows left after the dataset filters (dataset_sources/categories, pass rate)"
        )
    return dataset


def constant_images(dataset, num_proc: int | None = None):
    """The control of a run: every image replaced by the same grey image (rows keep their image count),
    so nothing the policy sees differs between rows but the question."""
    from PIL import Image

    grey = Image.new("RGB", (224, 224), (128, 128, 128))
    return dataset.map(
        lambda images: {"images": [grey] * len(images)},
        input_columns=["images"],
        num_proc=num_proc,
        desc="replacing the images with a constant image",
    )


def _check_rows(dataset) -> None:
    """Fail on a row without image or answer, naming it: a silent skip would bias the run."""
    columns = [c for c in ("images", "answer", "qid") if c in dataset.column_names]
    for i, row in enumerate(dataset.select_columns(columns)):
        where = f"row {i}" + (f" (qid {row['qid']})" if row.get("qid") else "")
        if not row["images"] or any(
            img is None or (img.get("bytes") is None and not img.get("path")) for img in row["images"]
        ):
            raise ValueError(f"{where} has no image; every CRO prompt needs its image(s). {SCHEMA_HELP}")
        if row["answer"] is None or not str(row["answer"]).strip():
            raise ValueError(f"{where} has an empty answer; the reward has nothing to grade against")


def _undecoded_images(dataset):
    import datasets

    feature = dataset.features["images"]
    if isinstance(feature, (list, datasets.Sequence, datasets.List)):
        return datasets.List(datasets.Image(decode=False))
    return feature


# --- The shipped sample: synthetic images whose answers are visible -------------------------------


def sample_rows(n: int = 48, seed: int = 0, size: int = 96) -> list[dict]:
    """Deterministic synthetic rows: counting, colour and multiple-choice shape questions."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = ("counting", "color", "shape")[i % 3]
        if kind == "counting":
            shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
            count = rng.randint(1, 6)
            others = [(s, c) for s in SHAPES for c in COLORS if (s, c) != (shape, color)]
            items = [(shape, color)] * count + rng.sample(others, rng.randint(0, 9 - count) // 2)
            question = f"How many {color} {shape}s are in the image?"
            answer = str(count)
        elif kind == "color":
            shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
            items = [(shape, color)]
            question = f"<image>What colour is the {shape}? " + prompts.SHORT_ANSWER_HINT
            answer = color
        else:
            shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
            items = [(shape, color)]
            options = rng.sample(SHAPES, len(SHAPES))
            letters = "ABC"
            question = "Which shape is shown in the image?\nChoices:\n" + "\n".join(
                f"{letter}. {option}" for letter, option in zip(letters, options, strict=True)
            )
            answer = letters[options.index(shape)]
        rows.append(
            {
                "images": [scene(rng, size, items)],
                "question": question,
                "answer": answer,
                "category": kind,
                "source": "racro-synthetic",
                "qid": f"synthetic-{i:04d}",
            }
        )
    return rows


def build_sample_dataset(out: str | Path, n: int = 48, seed: int = 0, task: str = "mixed") -> Path:
    """Write a synthetic set as ``out/train.parquet`` (images embedded as PNG bytes): ``mixed`` (counting,
    colour and shape questions), ``colour`` (the learnable task of :mod:`racro_trl.toy.colour_task`) or
    ``tiles`` (mini-RACRO's, :mod:`racro_trl.mini.task`: also its evaluation TSV, ``out/Tiles.tsv``)."""
    import datasets

    from ..toy.colour_task import colour_rows

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    features = training_features()
    if task not in ("mixed", "colour", "tiles"):
        raise ValueError(f"task must be 'mixed', 'colour' or 'tiles', got {task!r}")
    if task == "tiles":
        from ..mini.task import write_tiles_data

        return write_tiles_data(out, n=n, seed=seed)
    rows = sample_rows(n, seed) if task == "mixed" else colour_rows(n, seed)
    ds = datasets.Dataset.from_list(rows, features=features)
    ds.to_parquet(str(out / "train.parquet"))
    # One image as a file, for `racro infer --image data/sample/example.png --question ...`.
    rows[0]["images"][0].save(out / "example.png")
    (out / "example.txt").write_text(rows[0]["question"] + "\n" + rows[0]["answer"] + "\n")
    return out / "train.parquet"


def set_image_pixels(processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Bound the image area (pixels) the Qwen2.5-VL processor resizes to; None keeps its setting."""
    image_processor = processor.image_processor
    size = dict(getattr(image_processor, "size", None) or {})
    if min_pixels is not None:
        size["shortest_edge"] = min_pixels
    if max_pixels is not None:
        size["longest_edge"] = max_pixels
    if min_pixels is not None or max_pixels is not None:
        if size.get("shortest_edge", 0) > size.get("longest_edge", float("inf")):
            raise ValueError(f"image_min_pixels {min_pixels} exceeds image_max_pixels {max_pixels}")
        image_processor.size = size

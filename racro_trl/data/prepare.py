"""``racro prepare-data``: the ViRL39K release (``39Krelease.parquet`` + ``images/``) -> training dataset.

One step for what the original two scripts did (``virl39k_pre.py``, ``virl39k.py``): drop the
text-only DeepScaleR rows, resolve image paths against the parquet's folder, place ``<image>`` tags,
resize images onto the Qwen patch grid inside the pixel bounds, build the caption prompt, and write an HF dataset (``save_to_disk`` plus
parquet shards). Rows are streamed through ``Dataset.from_generator`` in shards, so memory stays
flat; every row that is dropped is counted with its reason, none silently.
"""

from __future__ import annotations

import io
import json
import logging
import math
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..reasoning import prompts
from ..training.sampled_prompt import aligned_size

logger = logging.getLogger(__name__)

RELEASE_FILE = "39Krelease.parquet"
RELEASE_COLUMNS = {
    "question": "str",
    "answer": "str",
    "PassRate_32BTrained": "float",
    "PassRate_7BBase": "float",
    "category": "str",
    "source": "str",
    "qid": "str",
    "image": "list of image paths relative to the parquet's folder",
}


class PrepareError(ValueError):
    """The release files cannot be turned into a dataset as asked."""


@dataclass
class PrepareOptions:
    """What ``racro prepare-data`` does; defaults are the original preprocessing."""

    drop_sources: tuple[str, ...] = ("DeepScaleR",)
    keep_sources: tuple[str, ...] = ()
    min_pixels: int = 512 * 512
    max_pixels: int = 2048 * 2048
    grid: int = 28  # Qwen2.5-VL: 14-pixel patches merged 2 x 2
    skip_bad: bool = False
    num_proc: int = 1
    shard_rows: int = 512


@dataclass
class PrepareSummary:
    rows_in: int = 0
    rows_out: int = 0
    seconds: float = 0.0
    by_source_in: Counter = field(default_factory=Counter)
    by_source_out: Counter = field(default_factory=Counter)
    by_category_out: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    resized: int = 0

    def table(self) -> str:
        lines = [f"rows in {self.rows_in}, rows out {self.rows_out}, dropped {sum(self.dropped.values())}"]
        lines += [f"  dropped ({reason}): {n}" for reason, n in sorted(self.dropped.items())]
        lines.append(f"{'source':<28}{'in':>8}{'out':>8}")
        lines += [
            f"{s:<28}{self.by_source_in[s]:>8}{self.by_source_out[s]:>8}" for s in sorted(self.by_source_in)
        ]
        lines.append(f"{'category':<28}{'out':>16}")
        lines += [f"{c:<28}{n:>16}" for c, n in sorted(self.by_category_out.items())]
        rate = self.rows_in / self.seconds if self.seconds else float("nan")
        lines.append(
            f"images resized onto the patch grid inside the pixel bounds: {self.resized}; {self.seconds:.1f}s, {rate:.0f} rows/s"
        )
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in self.__dict__.items()}


def find_release(src: str | Path) -> Path:
    """The release parquet: ``src`` itself or ``src/39Krelease.parquet``; unzips ``images.zip`` once."""
    src = Path(src)
    parquet = src / RELEASE_FILE if src.is_dir() else src
    if not parquet.is_file():
        raise PrepareError(f"no {RELEASE_FILE} at {src} (give the parquet file or the folder holding it)")
    root = parquet.parent
    archive = root / "images.zip"
    if not (root / "images").is_dir() and archive.is_file():
        logger.info("extracting %s", archive)
        with zipfile.ZipFile(archive) as z:
            z.extractall(root)
    return parquet


def _load_image(path: Path, options: PrepareOptions) -> tuple[dict, bool]:
    """The image as ``{"bytes", "path"}`` on the Qwen patch grid, inside the pixel bounds (the size every
    Qwen2.5-VL processor with these bounds keeps as it is); raises OSError if unreadable, ValueError if
    its aspect ratio is beyond what Qwen's resize takes."""
    from PIL import Image

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes fully: a truncated file fails here, not during training
        size = aligned_size(*image.size, options.grid, options.min_pixels, options.max_pixels)
        if size == image.size:
            return {"bytes": data, "path": path.name}, False
        out = io.BytesIO()
        fmt = "JPEG" if image.format == "JPEG" else "PNG"
        image.convert("RGB" if fmt == "JPEG" else image.mode).resize(size, Image.Resampling.BICUBIC).save(
            out, fmt
        )
        return {"bytes": out.getvalue(), "path": path.name}, True


def _rows(shards: list[dict], options: PrepareOptions, log_dir: str):
    """Generator for ``Dataset.from_generator``: checked training rows of one shard list."""
    for shard in shards:
        dropped, resized = Counter(), 0
        for row in shard["rows"]:
            try:
                images = []
                for rel in row["image"]:
                    path = Path(shard["root"]) / rel
                    if not path.is_file():
                        raise _Skip("missing image file", f"{path} does not exist")
                    try:
                        image, was_resized = _load_image(path, options)
                    except OSError as error:
                        raise _Skip("unreadable image", f"{path}: {error}") from error
                    except ValueError as error:  # qwen_vl_utils.smart_resize: aspect ratio over 200
                        raise _Skip("extreme aspect ratio", f"{path}: {error}") from error
                    images.append(image)
                    resized += was_resized
            except _Skip as skip:
                if not options.skip_bad:
                    raise PrepareError(
                        f"row qid={row['qid']}: {skip.detail} (use --skip-missing to skip and count such rows)"
                    ) from None
                dropped[skip.reason] += 1
                continue
            question = prompts.place_image_tags(row["question"], len(images))
            yield {
                "images": images,
                "question": question,
                "answer": str(row["answer"]).strip(),
                "category": row["category"],
                "source": row["source"],
                "qid": row["qid"],
                "PassRate_32BTrained": row["PassRate_32BTrained"],
                "PassRate_7BBase": row["PassRate_7BBase"],
                "prompt": prompts.caption_messages(question, len(images)),
            }
        (Path(log_dir) / f"{shard['index']}.json").write_text(
            json.dumps({"dropped": dropped, "resized": resized})
        )


class _Skip(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _features():
    import datasets

    text = datasets.Value("string")
    block = {"type": text, "text": text}
    return datasets.Features(
        {
            "images": datasets.List(datasets.Image()),
            "question": text,
            "answer": text,
            "category": text,
            "source": text,
            "qid": text,
            "PassRate_32BTrained": datasets.Value("float64"),
            "PassRate_7BBase": datasets.Value("float64"),
            "prompt": datasets.List({"role": text, "content": datasets.List(block)}),
        }
    )


def _select_rows(table, options: PrepareOptions, summary: PrepareSummary) -> list[dict]:
    """Rows to convert, after the source filters and the checks that need no image."""
    rows = table.to_pylist()
    summary.rows_in = len(rows)
    seen: set[str] = set()
    kept = []
    for row in rows:
        source = row["source"]
        summary.by_source_in[source] += 1
        reason = None
        if source in options.drop_sources:
            reason = f"source {source}"
        elif options.keep_sources and source not in options.keep_sources:
            reason = "source not kept"
        elif not row["image"]:
            reason = "no image"
        elif row["answer"] is None or not str(row["answer"]).strip():
            reason = "empty answer"
        elif row["qid"] in seen:
            reason = "duplicate qid"
        if reason in {"no image", "empty answer", "duplicate qid"} and not options.skip_bad:
            raise PrepareError(
                f"row qid={row['qid']} ({source}): {reason} (use --skip-missing to skip and count such rows)"
            )
        if reason:
            summary.dropped[reason] += 1
            continue
        seen.add(row["qid"])
        kept.append(row)
    return kept


def prepare_virl39k(src: str | Path, out: str | Path, options: PrepareOptions | None = None):
    """Convert the release at ``src`` into a training dataset at ``out``.

    Returns:
        (dataset, summary). ``out`` holds the ``save_to_disk`` dataset, ``parquet/`` shards and
        ``prepare_summary.json``.
    """
    import datasets
    import pyarrow.parquet as pq

    options = options or PrepareOptions()
    start = time.perf_counter()
    parquet = find_release(src)
    table = pq.read_table(parquet)
    missing = [c for c in RELEASE_COLUMNS if c not in table.column_names]
    if missing:
        schema = ", ".join(f"{k} ({v})" for k, v in RELEASE_COLUMNS.items())
        raise PrepareError(f"{parquet} lacks column(s) {missing}; the ViRL39K release schema is: {schema}")
    summary = PrepareSummary()
    rows = _select_rows(table, options, summary)
    root = str(parquet.parent.resolve())
    shards = [
        {"index": i, "root": root, "rows": rows[s : s + options.shard_rows]}
        for i, s in enumerate(range(0, len(rows), options.shard_rows))
    ]
    if not shards:
        raise PrepareError(f"no rows left to prepare from {parquet}: {dict(summary.dropped)}")
    with tempfile.TemporaryDirectory() as log_dir, tempfile.TemporaryDirectory() as cache:
        try:
            dataset = datasets.Dataset.from_generator(
                _rows,
                features=_features(),
                gen_kwargs={"shards": shards, "options": options, "log_dir": log_dir},
                num_proc=min(options.num_proc, len(shards)) if options.num_proc > 1 else None,
                cache_dir=cache,
            )
        except datasets.exceptions.DatasetGenerationError as error:
            cause = error
            while cause is not None and not isinstance(cause, PrepareError):
                cause = cause.__cause__ or cause.__context__
            raise (cause or error) from None
        for log in Path(log_dir).glob("*.json"):
            counts = json.loads(log.read_text())
            summary.dropped.update(counts["dropped"])
            summary.resized += counts["resized"]
        out = Path(out)
        dataset.save_to_disk(str(out))
    dataset = datasets.load_from_disk(str(out))
    shard_dir = out / "parquet"
    shard_dir.mkdir(exist_ok=True)
    num_shards = max(1, math.ceil(len(dataset) / 5000))
    for i in range(num_shards):
        dataset.shard(num_shards, i, contiguous=True).to_parquet(
            str(shard_dir / f"train-{i:05d}-of-{num_shards:05d}.parquet")
        )
    summary.rows_out = len(dataset)
    summary.by_source_out.update(dataset["source"])
    summary.by_category_out.update(dataset["category"])
    summary.seconds = time.perf_counter() - start
    (out / "prepare_summary.json").write_text(json.dumps(summary.to_json(), indent=2))
    return dataset, summary

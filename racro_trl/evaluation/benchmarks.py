"""Benchmark TSVs in a data folder, fetched from VLMEvalKit's published URLs when missing.

The URLs and MD5 checksums are VLMEvalKit's own (``DATASET_URL`` / ``DATASET_MD5`` of its
``vlmeval/dataset/image_vqa.py``): the files VLMEvalKit downloads into ``$LMUData`` are the files
scored here, so a folder VLMEvalKit filled can be passed as ``--data-dir`` as it is.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

_VLMEVAL = "https://opencompass.openxlab.space/utils/VLMEval/"
_MATHVERSE = "http://opencompass.openxlab.space/utils/benchmarks/MathVerse/"
# name -> (url, md5); the first six are the columns of the paper's table.
PUBLISHED: dict[str, tuple[str, str]] = {
    "MathVista_MINI": (_VLMEVAL + "MathVista_MINI.tsv", "f199b98e178e5a2a20e7048f5dcb0464"),
    "MathVerse_MINI_Vision_Only": (
        _MATHVERSE + "MathVerse_MINIVOnly.tsv",
        "68a11d4680014ac881fa37adeadea3a4",
    ),
    "MathVision_MINI": (_VLMEVAL + "MathVision_MINI.tsv", "060fe4fa5d868987ce179307bd5f8a33"),
    "WeMath": (_VLMEVAL + "WeMath.tsv", "b5e969a075f01290a542411fb7766388"),
    "LogicVista": (_VLMEVAL + "LogicVista.tsv", "41c5d33adf33765c399e0e6ae588c061"),
    "DynaMath": (_VLMEVAL + "DynaMath.tsv", "b8425ad9a7114571fc9366e013699494"),
    "MathVerse_MINI": (_MATHVERSE + "MathVerse_MINIV.tsv", "5017caca32b7fa110c350a1bea861b65"),
    "MathVision": (_VLMEVAL + "MathVision.tsv", "93f6de14f7916e598aa1b7165589831e"),
}
PAPER_BENCHMARKS = list(PUBLISHED)[:6]


class DownloadError(RuntimeError):
    """A benchmark file could not be fetched or did not match its checksum."""


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def benchmark_file(
    name: str,
    data_dir: str | Path,
    published: dict[str, tuple[str, str]] | None = None,
    timeout: float = 60.0,
) -> Path:
    """``data_dir/<name>.tsv``, downloaded from its published URL (and checked) when it is missing.

    A download goes to ``<name>.tsv.part`` first and is renamed only once its MD5 matches, so an
    interrupted or corrupt download never passes for the benchmark.
    """
    import httpx
    from tqdm import tqdm

    path = Path(data_dir) / f"{name}.tsv"
    if path.exists():
        return path
    published = PUBLISHED if published is None else published
    if name not in published:
        raise DownloadError(
            f"{path} does not exist, and {name} has no published URL to fetch it from "
            f"(known: {', '.join(published)}); put the TSV there"
        )
    url, expected = published[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".tsv.part")
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length") or 0) or None
            with (
                part.open("wb") as f,
                tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}") as bar,
            ):
                for chunk in response.iter_bytes(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except httpx.HTTPError as error:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{path} is missing and downloading it from {url} failed ({type(error).__name__}: {error}); "
            f"offline, fetch that URL elsewhere and put the file at {path}"
        ) from error
    got = md5sum(part)
    if expected and got != expected:
        part.unlink()
        raise DownloadError(
            f"{url} gave a file with MD5 {got}, not the published {expected}; nothing written"
        )
    part.rename(path)
    logger.info("downloaded %s from %s (MD5 %s)", path, url, got)
    return path

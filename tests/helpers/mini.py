"""The mini-RACRO models of the suite's reduced check (tests/test_mini_claims.py): the captioner and the
two reasoners of one ``racro repro-mini`` build, committed under tests/data/mini with the hashes of the
code that built them, since building them takes ~8 minutes on 2 cores (docs/mini-racro.md).

``make mini-models`` (this module's ``__main__``) builds them anew and replaces them."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

from .paths import REPO

MODELS = REPO / "tests" / "data" / "mini"
ROLES = ("captioner", "weak", "strong")
BUILT_BY = (
    "racro_trl/mini/models.py",
    "racro_trl/mini/task.py",
    "racro_trl/toy/tiny.py",
    "racro_trl/toy/sft.py",
    "racro_trl/reasoning/prompts.py",
)
"""The files whose code decides the models' weights: their data, prompts, tokenizer, shapes and training."""


def code_hashes() -> dict[str, str]:
    return {name: hashlib.sha256((REPO / name).read_bytes()).hexdigest() for name in BUILT_BY}


def freeze(built: Path) -> None:
    """Replace tests/data/mini with ``built``'s captioner, weak and strong reasoner, and record the code."""
    shutil.rmtree(MODELS, ignore_errors=True)
    for role in ROLES:
        shutil.copytree(built / role, MODELS / role)
    (MODELS / "built.json").write_text(json.dumps({"code": code_hashes()}, indent=1) + "\n")


if __name__ == "__main__":
    from racro_trl.mini.repro import build_models

    build_models(Path(sys.argv[1]))  # what is already there is kept
    freeze(Path(sys.argv[1]))

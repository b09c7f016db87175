"""Models the suite reads from the repository instead of building them, since building takes minutes
on 2 cores: each set lies under tests/data with the hashes of the code that built it, and
tests/test_committed_models.py fails once that code changes, until the set is built anew.

* :data:`MINI` (tests/data/mini): one ``racro repro-mini`` build, the captioner and the two reasoners of
  the reduced mini-RACRO check (tests/test_mini_claims.py); ~8 minutes (docs/mini-racro.md).
* :data:`COLOUR` (tests/data/colour): the colour task's reader and warm-started captioner, as
  ``racro make-tiny`` builds them for ``make demo``; ~2 minutes, which every ``make test`` spent before
  its first test.

``make mini-models`` and ``make colour-models`` (``python -m helpers.committed mini|colour OUT``) build a
set anew and replace it."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .paths import REPO


@dataclass(frozen=True)
class Committed:
    name: str
    roles: tuple[str, ...]
    built_by: tuple[str, ...]
    """The files whose code decides the models' weights: their data, prompts, tokenizer, shapes and training."""

    @property
    def folder(self) -> Path:
        return REPO / "tests" / "data" / self.name

    def code_hashes(self) -> dict[str, str]:
        return {name: hashlib.sha256((REPO / name).read_bytes()).hexdigest() for name in self.built_by}

    def changed_since_built(self) -> list[str]:
        built = json.loads((self.folder / "built.json").read_text())["code"]
        return [name for name, digest in self.code_hashes().items() if built.get(name) != digest]

    def copy_to(self, out: Path) -> dict[str, Path]:
        """Each role's model copied under ``out`` (kept when already there): a run writes nothing here."""
        paths = {role: Path(out) / role for role in self.roles}
        for role, path in paths.items():
            if not (path / "config.json").exists():
                shutil.copytree(self.folder / role, path, dirs_exist_ok=True)
        return paths

    def freeze(self, built: Path) -> None:
        """Replace the set with ``built``'s models, and record the code that built them."""
        shutil.rmtree(self.folder, ignore_errors=True)
        for role in self.roles:
            shutil.copytree(built / role, self.folder / role)
        (self.folder / "built.json").write_text(json.dumps({"code": self.code_hashes()}, indent=1) + "\n")


MINI = Committed(
    "mini",
    ("captioner", "weak", "strong"),
    (
        "racro_trl/mini/models.py",
        "racro_trl/mini/task.py",
        "racro_trl/toy/tiny.py",
        "racro_trl/toy/sft.py",
        "racro_trl/reasoning/prompts.py",
    ),
)
COLOUR = Committed(
    "colour",
    ("reader", "captioner"),
    (
        "racro_trl/toy/colour_task.py",
        "racro_trl/toy/drawing.py",
        "racro_trl/toy/tiny.py",
        "racro_trl/toy/sft.py",
        "racro_trl/reasoning/prompts.py",
        "racro_trl/training/caption_health.py",
    ),
)
SETS = {models.name: models for models in (MINI, COLOUR)}


if __name__ == "__main__":
    which, out = SETS[sys.argv[1]], Path(sys.argv[2])
    if which is MINI:
        from racro_trl.mini.repro import build_models

        build_models(out)  # what is already there is kept
    else:
        from racro_trl.toy.tiny import build_tiny_models

        build_tiny_models(out)
    which.freeze(out)

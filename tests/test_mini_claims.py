"""Mini-RACRO's two claims, reduced to fit the suite: ``racro repro-mini`` on the committed models
(tests/data/mini, from ``make mini-models``), one CRO seed of 40 steps rather than three of 60, on the
table's 192 held-out rows. The full run is docs/mini-racro.md's table.

All 192 rows, not a subset: the two reasoners differ on products with a yellow tile, and on the first 64
rows their ceilings from ground-truth captions are 85.7 and 91.3, too close for a threshold; on the 192
they are 80.0 and 89.8.

Measured (2026-12-07, AMD EPYC, 2 cores), CRO + weak / CRO + strong / captions with both needed facts,
from start + weak 57.5 and 72.9%, MLLM-only 29.2: seed 0 68.4 / 79.1 / 88.5% (at 40 steps its
captions got tile 1's or 2's colour wrong for 22 of the 192 questions), seed 1 77.9 / 89.8 / 100%,
seed 2 77.9 / 89.8 / 100%; seed 0 with one thread as with two. The thresholds below hold for each with at least 5 points to spare."""

from __future__ import annotations

import json

import pytest

from helpers import racro
from helpers.committed import MINI

SEED, STEPS, ROWS = 0, 40, 192


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("mini")
    MINI.copy_to(out / "models")
    done = racro(
        "repro-mini", "--out", str(out), "--seeds", str(SEED), "--steps", str(STEPS), "--eval-rows", str(ROWS),
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "table.json").read_text())
    means = {name: runs[0]["mean"] for name, runs in report["table"].items()}
    return means | {"needed": report["needed_facts"]}


def test_cro_captions_let_the_weak_reasoner_answer_better_than_the_start_and_the_mllm_alone(report):
    """Claim 1: the reasoner of training reads CRO's captions better than the starting captioner's, and
    does better than the captioner answering by itself; the captions carry the facts their question needs."""
    cro, start = report["CRO captioner + weak reasoner"], report["start captioner + weak reasoner"]
    assert cro >= start + 5, report
    assert cro >= report["MLLM only (start captioner)"] + 15, report
    assert report["needed"]["CRO"][0] >= report["needed"]["start"] + 8, report


def test_a_stronger_reasoner_swapped_in_at_inference_raises_accuracy(report):
    """Claim 2: the strong reasoner, never used in training, reads the same CRO captions better."""
    assert report["CRO captioner + strong reasoner"] >= report["CRO captioner + weak reasoner"] + 5, report

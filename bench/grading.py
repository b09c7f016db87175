"""Grading and leak-detection quality on the labelled sets (CPU, seconds).

    python bench/grading.py

1. ``tests/data/grading_labelled.jsonl``: R1-style reasoner outputs with gold answers and the right
   verdict. Prints the share of verdicts each grader (``default``, ``strict`` = mathruler, the
   original reward) gets right, per case kind.
2. ``tests/data/leak_labelled.jsonl``: captions labelled as giving the answer away or not. Prints
   the precision and recall of ``caption_leak``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> None:
    from racro_trl.reasoning.grading import GRADERS, caption_leak, parse_choices

    cases = [json.loads(line) for line in (DATA / "grading_labelled.jsonl").open()]
    right: dict[str, dict[str, list[bool]]] = {name: defaultdict(list) for name in GRADERS}
    for c in cases:
        for name, grade in GRADERS.items():
            verdict = grade(c["output"], c["gold"], parse_choices(c["question"]), c["truncated"])[1]
            right[name][c["case"]].append(verdict == c["label"])
    kinds = sorted({c["case"] for c in cases})
    print(f"grading: {len(cases)} labelled outputs")
    print(f"{'kind':>10} {'n':>4} " + " ".join(f"{name:>8}" for name in GRADERS))
    for kind in kinds:
        n = len(right["default"][kind])
        print(f"{kind:>10} {n:>4} " + " ".join(f"{sum(right[g][kind]) / n:>8.3f}" for g in GRADERS))
    totals = {g: sum(sum(v) for v in right[g].values()) / len(cases) for g in GRADERS}
    print(f"{'all':>10} {len(cases):>4} " + " ".join(f"{totals[g]:>8.3f}" for g in GRADERS))
    print(f"RATIO default / strict (mathruler) accuracy: {totals['default'] / totals['strict']:.3f}")

    leaks = [json.loads(line) for line in (DATA / "leak_labelled.jsonl").open()]
    found = [caption_leak(c["caption"], c["gold"], parse_choices(c["question"])) for c in leaks]
    tp = sum(f and c["leak"] for f, c in zip(found, leaks, strict=True))
    fp = sum(f and not c["leak"] for f, c in zip(found, leaks, strict=True))
    fn = sum(not f and c["leak"] for f, c in zip(found, leaks, strict=True))
    print(
        f"caption_leak: {len(leaks)} labelled captions ({tp + fn} leaks): precision {tp / max(tp + fp, 1):.3f}, "
        f"recall {tp / max(tp + fn, 1):.3f}"
    )


if __name__ == "__main__":
    main()

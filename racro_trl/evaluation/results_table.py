"""The paper's table from finished evaluations: one row per (captioner, reasoner, mode), one column per
benchmark, then the average; as markdown, CSV and a grouped bar chart (``racro eval`` writes it for
its own runs, ``racro table`` for any set of output folders)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from .benchmarks import PAPER_BENCHMARKS

logger = logging.getLogger(__name__)


def collect_summaries(folders: list[str | Path]) -> list[dict]:
    """Every ``*_summary.json`` that ``racro eval`` wrote below ``folders``; a later folder's result
    for the same (captioner, reasoner, mode, benchmark) replaces an earlier one, with a warning."""
    found: dict[tuple, tuple[Path, dict]] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder of racro eval results")
        files = sorted(folder.rglob("*_summary.json"))
        if not files:
            raise FileNotFoundError(f"{folder} holds no *_summary.json (is it a racro eval --out folder?)")
        for path in files:
            summary = json.loads(path.read_text())
            key = (
                summary["mllm"],
                summary["reasoner"],
                summary["mode"],
                summary.get("scoring", "rule"),
                summary["benchmark"],
            )
            if key in found:
                logger.warning(
                    "%s replaces %s (same captioner, reasoner, mode, scoring, benchmark)", path, found[key][0]
                )
            found[key] = (path, summary)
    return [summary for _, summary in found.values()]


def _columns(summaries: list[dict]) -> list[str]:
    names = {s["benchmark"] for s in summaries}
    return [b for b in PAPER_BENCHMARKS if b in names] + sorted(names - set(PAPER_BENCHMARKS))


def table_rows(summaries: list[dict]) -> tuple[list[str], list[dict]]:
    """The benchmark columns, and per (captioner, reasoner, mode, scoring) its accuracies and average:
    rule-based and judged scores are rows of their own, never averaged together."""
    columns = _columns(summaries)
    rows: dict[tuple, dict] = {}
    for s in summaries:
        scoring = s.get("scoring", "rule")
        row = rows.setdefault(
            (s["mllm"], s["reasoner"], s["mode"], scoring),
            {
                "captioner": s["mllm"],
                "reasoner": s["reasoner"],
                "mode": s["mode"],
                "scores": {},
                "scoring": scoring,
            },
        )
        row["scores"][s["benchmark"]] = s["accuracy"]
    for row in rows.values():
        row["average"] = sum(row["scores"].values()) / len(row["scores"])
        row["complete"] = set(row["scores"]) == set(columns)
    return columns, list(rows.values())


def write_table(summaries: list[dict], out: str | Path, title: str = "Accuracy (%)") -> Path:
    """``results_table.md``, ``results_table.csv`` and ``results_table.png`` in ``out``; returns the .md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns, rows = table_rows(summaries)
    cell = lambda row, b: f"{row['scores'][b]:.1f}" if b in row["scores"] else "-"  # noqa: E731
    average = lambda row: f"{row['average']:.1f}" + ("" if row["complete"] else "*")  # noqa: E731
    lines = [
        "| captioner | reasoner | mode | " + " | ".join(columns) + " | Avg | scoring |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in columns) + " | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['captioner']} | {row['reasoner']} | {row['mode']} | "
            + " | ".join(cell(row, b) for b in columns)
            + f" | {average(row)} | {row['scoring']} |"
        )
    notes = ["", "`*`: averaged over the benchmarks the row has. Scoring `rule`: boxed answer, choice "
             "letter or option text, math-verify (no judge); `judge:<model>`: answers extracted by that LLM judge, "
             "then graded by the same rules (rows of their own)."]  # fmt: skip
    md = out / "results_table.md"
    md.write_text("\n".join([f"## {title}", "", *lines, *notes]) + "\n")
    with (out / "results_table.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["captioner", "reasoner", "mode", *columns, "Avg", "scoring"])
        for row in rows:
            writer.writerow(
                [row["captioner"], row["reasoner"], row["mode"], *(cell(row, b) for b in columns),
                 average(row), row["scoring"]]
            )  # fmt: skip
    grouped_bars(columns, rows, out / "results_table.png", title)
    return md


def grouped_bars(columns: list[str], rows: list[dict], path: Path, title: str) -> None:
    """One group of bars per benchmark (and the average), one bar per row of the table."""
    from ..reporting.run_summary import pyplot

    plt = pyplot()
    groups = [*columns, "Avg"]
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups)), 4), dpi=110)
    for i, row in enumerate(rows):
        values = [row["scores"].get(b, 0.0) for b in columns] + [row["average"]]
        xs = [g + (i - (len(rows) - 1) / 2) * width for g in range(len(groups))]
        judged = "" if row["scoring"] == "rule" else ", judged"
        label = f"{Path(row['captioner']).name} + {Path(row['reasoner']).name} ({row['mode']}{judged})"
        ax.bar(xs, values, width, label=label[:60])
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

"""Benchmark evaluation: VLMEvalKit TSV files through the three RACRO stages, cached, scored.

Each stage's outputs go to a JSONL file in the output folder, appended batch by batch, so an
interrupted run resumes where it stopped; the stage-3 file is keyed by the reasoner, so changing
the reasoner re-runs stage 3 only. Scores are rule-based (last ``\\boxed{}``, choice letter or
option text, math-verify); an LLM judge can extract the answers instead (:mod:`racro_trl.reasoning.judge`,
opt-in), and its scores are marked ``judge:<model>``: see README ("Evaluation").
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import re
import string
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from ..reasoning.grading import choice_letter, extract_answer, is_equivalent, strip_thinking
from .pipeline import Item, RacroPipeline

logger = logging.getLogger(__name__)

MODES = ("full", "caption-only", "mllm-only")
REQUIRED = ("index", "question", "answer")
MCQ_PROMPT = "Please select the correct answer from the options above."


class BenchmarkError(ValueError):
    """The benchmark file cannot be evaluated as given."""


def load_benchmark(path: str | Path) -> list[dict]:
    """Rows of a VLMEvalKit TSV (``index``, ``question``, ``answer``, base64 ``image``, ``A``..``H``, ...)."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"benchmark file {path} does not exist")
    csv.field_size_limit(1 << 30)  # base64 images are long fields
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise BenchmarkError(f"benchmark {path} has no rows")
    columns = set(rows[0])
    missing = [c for c in REQUIRED if c not in columns]
    if missing or not ({"image", "image_path"} & columns):
        missing += [] if {"image", "image_path"} & columns else ["image"]
        raise BenchmarkError(
            f"benchmark {path} lacks column(s) {missing}; VLMEvalKit TSV columns: index, question, answer, "
            f"image (base64) or image_path, optional A..H choices, hint, category; found {sorted(columns)}"
        )
    return rows


def choices_of(row: dict) -> dict[str, str]:
    """The multiple-choice options of a row (columns ``A``.. that are present and non-empty)."""
    return {c: row[c] for c in string.ascii_uppercase[:8] if (row.get(c) or "").strip() and row[c] != "nan"}


def build_question(row: dict) -> str:
    """The question as VLMEvalKit's Qwen2-VL builds it: hint, question, options, selection request."""
    choices = choices_of(row)
    if not choices:
        return row["question"]
    text = f"Hint: {row['hint']}\n" if (row.get("hint") or "").strip() not in {"", "nan"} else ""
    text += f"Question: {row['question']}\nOptions:\n"
    text += "".join(f"{letter}. {option}\n" for letter, option in choices.items())
    return text + MCQ_PROMPT


def decode_images(row: dict, root: Path | None = None) -> list:
    """The row's images: base64 (one, or a JSON list of them) or ``image_path``; raises ValueError."""
    from PIL import Image

    value = (row.get("image") or "").strip()
    if value:
        encoded = json.loads(value) if value.startswith("[") else [value]
        images = []
        for item in encoded:
            try:
                image = Image.open(io.BytesIO(base64.b64decode(item, validate=True)))
                image.load()
            except Exception as error:  # binascii.Error, PIL.UnidentifiedImageError, truncated data
                raise ValueError(f"corrupt base64 image ({type(error).__name__}: {error})") from error
            images.append(image.convert("RGB"))
        return images
    path = Path(row["image_path"])
    path = path if path.is_absolute() or root is None else root / path
    try:
        return [Image.open(path).convert("RGB")]
    except OSError as error:
        raise ValueError(f"image {path} unreadable: {error}") from error


def score(output: str | None, row: dict) -> tuple[str | None, bool]:
    """(extracted answer, correct) for a model output against the row's answer."""
    return score_answer(extract_answer(output) if output else None, row)


def score_answer(pred: str | None, row: dict) -> tuple[str | None, bool]:
    """(answer, correct) for an extracted answer (by rule or by a judge) against the row's answer."""
    gold, choices = row["answer"], choices_of(row)
    if pred is None:
        return None, False
    if is_equivalent(pred, gold, choices):
        return pred, True
    letter = choice_letter(pred, "".join(choices)) if choices else None
    # MathVista-style rows hold the option text as the answer: compare the chosen option's text.
    return pred, bool(letter and is_equivalent(choices[letter], gold))


def _slug(*parts: str) -> str:
    text = "_".join(parts)
    name = re.sub(r"[^A-Za-z0-9.-]+", "-", text.split("/")[-1] if "://" not in text else text)[-40:].strip(
        "-"
    )
    return f"{name}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


class StageCache:
    """One stage's outputs (or the judge's extracted answers): ``{"index", "output"}`` per line,
    appended and flushed per batch."""

    def __init__(self, path: Path):
        self.path = path
        self.outputs: dict[str, str | None] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.outputs[record["index"]] = record["output"]

    def add(self, indices: list[str], outputs: list[str]) -> None:
        with self.path.open("a") as f:
            for index, output in zip(indices, outputs, strict=True):
                f.write(json.dumps({"index": index, "output": output}) + "\n")
                self.outputs[index] = output


def _run_stage(name: str, cache: StageCache, pending: list[str], run, batch_size: int, failed: dict) -> int:
    """Run ``run(indices) -> outputs`` over the indices ``cache`` lacks, batch by batch.

    A batch that raises (other than a reasoner outage) is retried item by item; an item that
    still fails is recorded in ``failed`` and the others go on. Returns how many were computed.
    """
    from tqdm import tqdm

    from ..reasoning.reasoners import ReasonerError

    todo = [i for i in pending if i not in cache.outputs and i not in failed]
    bar = tqdm(total=len(todo), desc=f"stage {name}", unit="sample", disable=not todo)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        bar.update(len(batch))
        try:
            cache.add(batch, run(batch))
        except ReasonerError:
            raise
        except Exception as error:
            logger.warning("stage %s: batch failed (%s); retrying one by one", name, error)
            for index in batch:
                try:
                    cache.add([index], run([index]))
                except ReasonerError:
                    raise
                except Exception as item_error:
                    failed[index] = f"stage {name}: {type(item_error).__name__}: {item_error}"
    bar.close()
    return len(todo)


def evaluate(
    pipeline: RacroPipeline,
    benchmark: str,
    data: str | Path,
    out: str | Path,
    *,
    mode: str = "full",
    mllm_name: str = "mllm",
    reasoner_name: str = "reasoner",
    limit: int | None = None,
    batch_size: int = 64,
    report_name: str | None = None,
    judge=None,
) -> dict:
    """Run (or resume) a benchmark and write results; returns the summary.

    ``judge``: an :class:`racro_trl.reasoning.judge.AnswerJudge` that extracts the final answers (cached in
    ``judge_*.jsonl``); the summary's ``scoring`` is then ``judge:<model>``, else ``rule``.

    Writes in ``out``: ``stage1_*.jsonl``, ``stage2_*.jsonl``, ``stage3_*.jsonl`` (caches), and under
    ``report_name`` (default ``{benchmark}_{mode}``): ``_results.jsonl`` (per sample),
    ``_summary.json`` (what ``racro table`` reads), ``_summary.csv``, ``_summary.md``, ``_accuracy.png``.
    """
    if mode not in MODES:
        raise BenchmarkError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_benchmark(data)[:limit]
    by_index = {str(r["index"]): r for r in rows}
    if len(by_index) != len(rows):
        raise BenchmarkError(f"benchmark {data} repeats index values")
    failed: dict[str, str] = {}
    items: dict[str, Item] = {}
    for index, row in by_index.items():
        try:
            items[index] = Item(decode_images(row, Path(data).parent), build_question(row))
        except ValueError as error:
            failed[index] = str(error)
    indices = list(items)
    computed = {}

    stage1 = StageCache(out / f"stage1_tentative_{_slug(mllm_name)}.jsonl")
    stage2 = StageCache(out / f"stage2_caption_{_slug(mllm_name)}.jsonl")
    if mode in ("full", "mllm-only"):
        computed["tentative"] = _run_stage(
            "tentative",
            stage1,
            indices,
            lambda b: pipeline.tentative([items[i] for i in b]),
            batch_size,
            failed,
        )
    if mode in ("full", "caption-only"):
        computed["caption"] = _run_stage(
            "caption", stage2, indices, lambda b: pipeline.caption([items[i] for i in b]), batch_size, failed
        )
        # Sampled answers depend on the seed: another seed is another stage-3 cache, not a resumed one.
        # (No pipeline when every stage is cached.)
        seed = getattr(getattr(pipeline, "joint_sampling", None), "seed", None)
        seeded = (f"seed{seed}",) if seed is not None else ()
        stage3 = StageCache(out / f"stage3_{mode}_{_slug(mllm_name, reasoner_name, *seeded)}.jsonl")

        def reason(batch):
            tentatives = [stage1.outputs[i] for i in batch] if mode == "full" else None
            return pipeline.reason(
                [items[i].question for i in batch], [stage2.outputs[i] for i in batch], tentatives
            )

        ready = [i for i in indices if i in stage2.outputs and (mode != "full" or i in stage1.outputs)]
        computed["reason"] = _run_stage("reason", stage3, ready, reason, batch_size, failed)
        finals = stage3.outputs
    else:
        finals = stage1.outputs

    judged = (
        _judge(judge, out, by_index, finals, mode, mllm_name, reasoner_name, batch_size) if judge else None
    )
    results = []
    for index, row in by_index.items():
        output = finals.get(index)
        pred, correct = score(output, row) if judged is None else score_answer(judged.get(index), row)
        results.append(
            {
                "index": index,
                "category": row.get("category") or "all",
                "question": row["question"],
                "answer": row["answer"],
                "tentative": stage1.outputs.get(index),
                "caption": stage2.outputs.get(index),
                "output": output,
                "prediction": pred,
                "correct": correct,
                "failed": failed.get(index) or (None if output is not None else "no output"),
            }
        )
    summary = summarize(results, benchmark, mode)
    summary |= {
        "mllm": mllm_name,
        "reasoner": reasoner_name if mode != "mllm-only" else "-",
        "scoring": f"judge:{judge.model}" if judge else "rule",
        "computed": computed,
    }
    write_reports(results, summary, out / (report_name or f"{benchmark}_{mode}"))
    return summary


def _judge(
    judge, out: Path, rows: dict, finals: dict, mode: str, mllm_name: str, reasoner_name: str, batch_size: int
) -> dict:
    """The judge's extracted answer per sample index, asked once per sample (a stage cache of its
    own); an output cut off inside its thinking has no answer and is not sent. A judge that still
    fails after the client's retries stops the run (its answers so far are kept)."""
    from ..reasoning.reasoners import ReasonerError

    cache = StageCache(out / f"judge_{mode}_{_slug(mllm_name, reasoner_name, judge.model)}.jsonl")
    responses = {i: strip_thinking(finals[i]).strip() for i in rows if finals.get(i)}

    def extract(batch: list[str]) -> list[str | None]:
        try:
            return judge.extract_many([(build_question(rows[i]), responses[i]) for i in batch])
        except Exception as error:
            raise ReasonerError(
                f"the judge at {judge.url} failed ({type(error).__name__}: {error})"
            ) from error

    _run_stage("judge", cache, [i for i, text in responses.items() if text], extract, batch_size, {})
    return {i: cache.outputs.get(i) for i in responses}


def summarize(results: list[dict], benchmark: str, mode: str) -> dict:
    """Accuracy overall and per category; failed samples count as wrong and are listed."""
    per = defaultdict(lambda: [0, 0])
    for r in results:
        per[r["category"]][0] += r["correct"]
        per[r["category"]][1] += 1
    total = len(results)
    correct = sum(r["correct"] for r in results)
    return {
        "benchmark": benchmark,
        "mode": mode,
        "samples": total,
        "correct": correct,
        "accuracy": 100.0 * correct / total if total else 0.0,
        "failed": sum(r["failed"] is not None for r in results),
        "categories": {c: {"samples": n, "accuracy": 100.0 * k / n} for c, (k, n) in sorted(per.items())},
    }


def write_reports(results: list[dict], summary: dict, stem: Path) -> None:
    """Per-sample JSONL, summary JSON, CSV + markdown table, and a bar chart PNG."""
    stem.with_name(stem.name + "_results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    stem.with_name(stem.name + "_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    rows = [("Overall", summary["samples"], summary["accuracy"])]
    rows += [(c, v["samples"], v["accuracy"]) for c, v in summary["categories"].items()]
    with stem.with_name(stem.name + "_summary.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "samples", "accuracy"])
        writer.writerows((name, n, f"{acc:.2f}") for name, n, acc in rows)
    lines = [
        f"## {summary['benchmark']} ({summary['mode']})",
        "",
        "| split | samples | accuracy (%) |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {n} | {acc:.2f} |" for name, n, acc in rows),
        "",
        f"Failed samples (counted as wrong): {summary['failed']}. Scoring: "
        + (
            "rule-based (boxed answer, choice letter, math-verify)."
            if summary["scoring"] == "rule"
            else f"answers extracted by the LLM judge {summary['scoring'][6:]}, then graded by rule."
        ),
    ]
    stem.with_name(stem.name + "_summary.md").write_text("\n".join(lines) + "\n")
    bar_chart(
        rows, stem.with_name(stem.name + "_accuracy.png"), f"{summary['benchmark']} ({summary['mode']})"
    )


def bar_chart(rows: list[tuple[str, int, float]], path: Path, title: str) -> None:
    """A horizontal bar chart of accuracies, overall first."""
    from ..reporting.run_summary import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.35 * len(rows)), dpi=110)
    names = [f"{name[:34]} (n={n})" for name, n, _ in rows][::-1]
    values = [acc for _, _, acc in rows][::-1]
    bars = ax.barh(names, values, color=["#3c6ec8"] * (len(rows) - 1) + ["#1e3c8c"])
    ax.bar_label(bars, fmt="%.1f%%", fontsize=8, padding=2)
    ax.set(xlim=(0, 105), xlabel="accuracy (%)", title=title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate_many(
    mllm,
    reasoners: list[tuple[str, Callable[[], object]]],
    benchmarks: list[tuple[str, str | Path]],
    out: str | Path,
    *,
    mllm_sampling,
    joint_sampling,
    mode: str = "full",
    mllm_name: str = "mllm",
    limit: int | None = None,
    batch_size: int = 64,
    close_reasoners: bool = True,
    flat: bool = False,
    judge=None,
    judge_benchmarks: list[str] | None = None,
) -> list[dict]:
    """Every benchmark with every reasoner, then the table of all of them (:mod:`racro_trl.evaluation.results_table`).

    ``reasoners`` are (name, builder) pairs, built one at a time and (``close_reasoners``) closed
    after their benchmarks, so that in-process engines never share the GPU.
    Each benchmark has its folder ``out/<benchmark>``, whose stage-1 and stage-2 caches (keyed by the
    captioner) the first reasoner fills and the others reuse: stages 1-2 run once per captioner,
    stage 3 once per reasoner. ``flat`` (one benchmark, one reasoner): ``out`` itself and reports
    named ``{benchmark}_{mode}``, as :func:`evaluate` writes them. Returns the summaries, each with
    its ``computed`` counts. ``judge`` extracts the answers of ``judge_benchmarks`` (None: all).
    """
    if flat and len(benchmarks) * len(reasoners) != 1:
        raise BenchmarkError("a flat output folder holds one benchmark with one reasoner")
    from .results_table import write_table

    out = Path(out)
    summaries = []
    for reasoner_name, build in reasoners if mode != "mllm-only" else reasoners[:1]:
        reasoner = build()
        pipeline = RacroPipeline(mllm, reasoner, mllm_sampling, joint_sampling)
        try:
            for benchmark, data in benchmarks:
                judged = (
                    judge if judge and (judge_benchmarks is None or benchmark in judge_benchmarks) else None
                )
                name = f"{benchmark}_{mode}" if flat else f"{benchmark}_{mode}_{_slug(reasoner_name)}"
                summary = evaluate(
                    pipeline, benchmark, data, out if flat else out / benchmark, mode=mode,
                    mllm_name=mllm_name, reasoner_name=reasoner_name, limit=limit, batch_size=batch_size,
                    report_name=name + (f"_judge-{_slug(judged.model)}" if judged else ""), judge=judged,
                )  # fmt: skip
                logger.info(
                    "%s (%s, %s, %s): %.2f%% of %d, %d failed; computed %s",
                    benchmark, mode, reasoner_name, summary["scoring"], summary["accuracy"], summary["samples"],
                    summary["failed"], summary["computed"],
                )  # fmt: skip
                summaries.append(summary)
        finally:
            if close_reasoners and hasattr(reasoner, "close"):
                reasoner.close()
    write_table(summaries, out)
    return summaries

"""``racro repro-mini``: build the tiles data and models, run CRO per seed, evaluate, write the table.

Every stage is the project's own command: ``make-sample-data --task tiles`` (the data),
``accelerate launch recipes/cro.py --config recipes/mini/cro.yaml`` (CRO, one run per seed), ``racro eval``
(caption-only with the weak and the strong reasoner; mllm-only for the captioner alone). What is
already in ``--out`` is kept (models, runs, evaluation caches), so an interrupted run resumes.

Written to ``--out``: ``table.md`` (rows: {start, CRO} x {weak, strong} + MLLM-only; columns: the three
question kinds and their mean; CRO rows as mean +- half the range over seeds), ``table.json``,
``figure.png`` (reward curves and the table), ``captions.md`` (one image under two questions, before
and after CRO) and the caption metric: the share of captions that state, rightly, both facts their
question needs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from . import task

logger = logging.getLogger(__name__)

KINDS = task.KINDS
ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], log: Path, env: dict | None = None) -> None:
    """Run a stage, its output in ``log``; on failure raise with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with log.open("w") as f:
        done = subprocess.run(
            cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
        )
    if done.returncode:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed (exit {done.returncode}); {log}:\n{tail}")
    logger.info("%s: %.0f s (log: %s)", " ".join(cmd[1:4]), time.time() - started, log)


def build_models(out: Path, seed: int = 0, deaf: bool = False) -> dict[str, Path]:
    """The captioner and the two reasoners under ``out`` (kept when already there); the captioner and
    the reasoners train at the same time, one core each. ``deaf``: also the deaf reasoner (a sabotage)."""
    paths = {"captioner": out / "captioner", "weak": out / "weak", "strong": out / "strong"}
    wants = {"captioner": [paths["captioner"]], "reasoners": [paths["weak"], paths["strong"]]}
    if deaf:
        paths["deaf"] = out / "deaf"
        wants["deaf"] = [paths["deaf"]]
    jobs = []
    for role, wanted in wants.items():
        if all((p / "config.json").exists() for p in wanted):
            continue
        log = out / f"build_{role}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "racro_trl.mini.models", role, str(out), "--seed", str(seed)]
        if role == "reasoners" and (paths["weak"] / "config.json").exists():
            cmd += ["--start", "weak"]  # interrupted after the weak one: the strong one goes on from it
        jobs.append((subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}), log))  # fmt: skip
    for job, log in jobs:
        if job.wait():
            raise RuntimeError(f"building the mini models failed; {log}:\n{log.read_text()[-3000:]}")
    return paths


def cro(out: Path, models: dict, data: Path, seed: int, steps: int, extra: list[str] = (), env: dict | None = None) -> Path:  # fmt: skip
    """One CRO run (kept when its final checkpoint exists); returns its output folder. ``env``: more
    environment for the launch."""
    run = out / f"cro-seed{seed}"
    final = run / f"checkpoint-{steps}"
    if (final / "config.json").exists():
        return run
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/single.yaml",
           "recipes/cro.py", "--config", "recipes/mini/cro.yaml", "--seed", str(seed), "--max_steps", str(steps),
           "--save_steps", str(steps), "--output_dir", str(run), "--model_name_or_path", str(models["captioner"]),
           "--reasoner_model", str(models["weak"]), "--dataset_name", str(data), *extra]  # fmt: skip
    _run(cmd, out / f"cro-seed{seed}.log", {"VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})})
    return run


def evaluate(out: Path, name: str, captioner: Path, models: dict, tsv: Path, mode: str) -> Path:
    """``racro eval`` of one captioner on the tiles TSV: caption-only with both reasoners, or mllm-only."""
    folder = out / "eval" / f"{name}-{mode}"
    cmd = [sys.executable, "-m", "racro_trl.tools.cli", "eval", "--benchmark", "Tiles", "--data", str(tsv),
           "--out", str(folder), "--mode", mode, "--mllm", str(captioner), "--mllm-backend", "transformers",
           "--max-tokens", "40", "--batch-size", "64"]  # fmt: skip
    for role in ("weak", "strong"):
        cmd += [
            "--reasoner",
            str(models[role]),
            "--reasoner-name",
            role,
            "--reasoner-backend",
            "transformers",
        ]
        if mode == "mllm-only":
            break
    _run(cmd, out / "eval" / f"{name}-{mode}.log")
    return folder


def _results(folder: Path) -> dict[str, list[dict]]:
    """Per-sample results of an evaluation folder, by reasoner name (``-`` for mllm-only)."""
    found = {}
    for summary_path in sorted(folder.rglob("*_summary.json")):
        summary = json.loads(summary_path.read_text())
        results = summary_path.with_name(summary_path.name.replace("_summary.json", "_results.jsonl"))
        found[summary["reasoner"]] = [json.loads(line) for line in results.read_text().splitlines()]
    return found


TEMPLATE_GROUPS = {"training templates": False, "held-out templates": True}
"""Columns of the second table: the questions phrased in a training or a held-out template."""


def accuracies(results: list[dict], rows: list[dict]) -> dict[str, float]:
    """Accuracy (%) per question kind and their mean (``mean``), and over the questions phrased in the
    training and in the held-out templates (:data:`TEMPLATE_GROUPS`; ``rows``: the evaluation rows that
    the results' ``index`` points to)."""

    def right(found: list[dict]) -> float:
        return 100.0 * sum(r["correct"] for r in found) / len(found) if found else float("nan")

    acc = {kind: right([r for r in results if r["category"] == kind]) for kind in KINDS}
    acc["mean"] = sum(acc[k] for k in KINDS) / len(KINDS)
    for group, held_out in TEMPLATE_GROUPS.items():
        acc[group] = right([r for r in results if task.held_out(rows[int(r["index"])]) == held_out])
    return acc


def needed_share(results: list[dict], rows: list[dict], held_out: bool | None = None) -> float:
    """Share (%) of captions that state, rightly, both facts their question needs; ``held_out``: only
    the questions in the held-out (True) or the training (False) templates."""
    chosen = [(r, rows[int(r["index"])]) for r in results]
    hits = [
        task.carries_needed(r["caption"] or "", row)
        for r, row in chosen
        if held_out is None or task.held_out(row) == held_out
    ]
    return 100.0 * sum(hits) / len(hits)


def per_image(results: list[dict], rows: list[dict]) -> dict[str, float]:
    """Over the evaluation's images, each asked two questions about different pairs of tiles (rows 2i and
    2i + 1): the share (%) whose two captions differ, and the share whose two captions each state, rightly,
    both facts their own question needs ("the captions answer the question asked")."""
    caption = {str(r["index"]): r["caption"] or "" for r in results}
    pairs = [
        (str(i), str(i + 1))
        for i in range(0, len(rows) - 1, 2)
        if str(i) in caption and str(i + 1) in caption
    ]
    differ = [caption[a] != caption[b] for a, b in pairs]
    both = [all(task.carries_needed(caption[i], rows[int(i)]) for i in pair) for pair in pairs]
    return {"differ": 100.0 * sum(differ) / len(pairs), "both_needed": 100.0 * sum(both) / len(pairs)}


def sampled_captions(run: Path, steps: int = 20) -> dict[str, dict]:
    """What CRO sampled, from the run's audit records (every caption, its question and its reward), over
    its first and its last ``steps`` steps: the share (%) of captions naming both tiles their question
    needs, the pair of tiles named most often and its share (%) (a captioner that names one pair
    whatever the question has collapsed), and the mean reward. Empty for a run without audit records
    (a reward given by its dotted path, as the blind sabotage's, writes none)."""
    records = [
        json.loads(line)
        for path in sorted((run / "audit").glob("*-rank*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    found = {}
    if not records:
        return found
    last = max(r["step"] for r in records)
    for name, window in (("first", range(steps)), ("last", range(last - steps + 1, last + 1))):
        chosen = [r for r in records if r["step"] in window]
        named = [tuple(sorted(task.facts(r["caption"] or ""))) for r in chosen]
        needed = [task.asked_tiles(r["question"]) for r in chosen]
        top, count = Counter(named).most_common(1)[0]
        found[name] = {
            "names_needed": 100.0 * sum(n == q for n, q in zip(named, needed, strict=True)) / len(chosen),
            "top_pair": list(top),
            "top_pair_share": 100.0 * count / len(chosen),
            "reward": sum(r["reward"] for r in chosen) / len(chosen),
        }
    return found


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and half the range.

    >>> spread([60.0, 70.0, 68.0])
    (66.0, 5.0)
    """
    return sum(values) / len(values), (max(values) - min(values)) / 2


def caption_metric(needed: dict) -> str:
    """One line: the share of captions stating both needed facts, start and CRO, over all questions and
    over those in the training and in the held-out templates.

    >>> caption_metric({"start": 18.2, "CRO": (55.7, 9.6), "start, held-out templates": 50.0, "CRO, held-out templates": (0.0, 0.0)})
    'start 18.2%, CRO 55.7 +- 9.6%; held-out templates: start 50.0%, CRO 0.0 +- 0.0%'
    """
    parts = []
    for group in ("", *(f", {g}" for g in TEMPLATE_GROUPS)):
        if f"start{group}" in needed:
            cro, half = needed[f"CRO{group}"]
            parts.append(
                f"{group[2:]}{': ' if group else ''}start {needed[f'start{group}']:.1f}%, CRO {cro:.1f} +- {half:.1f}%"
            )
    return "; ".join(parts)


def table(runs: dict[str, list[dict]], keys: tuple[str, ...] = (*KINDS, "mean")) -> str:
    """Markdown: one row per setting, the ``keys`` of :func:`accuracies` (the kinds and their mean), mean
    +- half-range over its runs."""
    lines = [
        "| setting | runs | " + " | ".join(keys) + " |",
        "| --- | ---: |" + " ---: |" * len(keys),
    ]
    for name, accs in runs.items():
        cells = []
        for key in keys:
            mean, half = spread([a[key] for a in accs])
            cells.append(f"{mean:.1f}" + (f" +- {half:.1f}" if len(accs) > 1 else ""))
        lines.append(f"| {name} | {len(accs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ceiling(models: dict, rows: list[dict], seed: int = 0) -> dict[str, dict[str, float]]:
    """Each reasoner's accuracy from ground-truth captions (the two facts each question needs): what the
    best captioner could reach with it. Stage 3 of ``racro eval`` (its prompt and sampling), in-process."""
    from ..evaluation.evaluate import score_answer
    from ..evaluation.pipeline import JOINT_SAMPLING, RacroPipeline
    from ..reasoning.grading import extract_answer
    from ..reasoning.reasoners import Sampling, build_reasoner

    captions = [task.caption(r["colours"], tuple(r["tiles"])) for r in rows]
    sampling = Sampling(JOINT_SAMPLING.temperature, JOINT_SAMPLING.top_p, max_tokens=40, seed=seed)
    found = {}
    for role in ("weak", "strong"):
        pipeline = RacroPipeline(
            None, build_reasoner("transformers", str(models[role])), joint_sampling=sampling
        )
        outputs = pipeline.reason([r["question"] for r in rows], captions, None)
        results = [
            {"index": i, "category": r["category"], "correct": score_answer(extract_answer(o), r)[1]}
            for i, (r, o) in enumerate(zip(rows, outputs, strict=True))
        ]
        found[role] = accuracies(results, rows)
    return found


def caption_examples(start: list[dict], after: list[dict], rows: list[dict], n: int = 2) -> str:
    """Markdown: images shown under two questions (the TSV's rows come in such pairs), with the captions
    of the starting and the CRO captioner, and whether each states the facts its question needs."""
    lines = []
    for first in range(0, 2 * n, 2):
        pair = rows[first : first + 2]
        lines.append(f"Tiles {', '.join(f'{t + 1} {c}' for t, c in enumerate(pair[0]['colours']))}")
        for row, s, a in zip(pair, start[first : first + 2], after[first : first + 2], strict=True):
            lines.append(
                f"- {task.strip_tags(row['question'])} (needs tiles {row['tiles'][0]} and {row['tiles'][1]})"
            )
            for name, r in (("start", s), ("CRO", a)):
                mark = "has both facts" if task.carries_needed(r["caption"] or "", row) else "misses"
                lines.append(f"  - {name}: `{r['caption']}` ({mark})")
        lines.append("")
    return "\n".join(lines)


def figure(runs: dict[str, Path], table_rows: dict[str, list[dict]], path: Path) -> Path:
    """Reward curves of the CRO runs (left) and the table's means with their range (right)."""
    from ..reporting.run_summary import load_log_history, pyplot

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for seed, run in runs.items():
        steps = [h for h in load_log_history(run) if "reward" in h]
        reasoner = [h.get("rewards/caption_reasoner/mean", h["reward"]) for h in steps]  # without the penalty
        left.plot([h["step"] for h in steps], reasoner, label=f"seed {seed}")
    left.set(xlabel="CRO step", ylabel="mean reward (weak reasoner right)", title="CRO reward", ylim=(0, 1))
    left.legend()
    names = list(table_rows)
    means = [spread([a["mean"] for a in table_rows[n]]) for n in names]
    right.barh(names, [m for m, _ in means], xerr=[h for _, h in means], color="tab:blue")
    right.set(xlabel="accuracy (%), mean of the three kinds", title="Tiles (held-out images)", xlim=(0, 100))
    right.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


GPU_CRO = ["--use_vllm", "true", "--vllm_mode", "colocate", "--vllm_gpu_memory_utilization", "0.15",
           "--vllm_max_model_length", "1024", "--reasoner_gpu_memory_utilization", "0.15"]  # fmt: skip
"""CRO's flags on one GPU: the captions sampled by TRL's colocated vLLM engine, the weak reasoner an
in-process vLLM engine beside it (``reasoner_backend: vllm`` in the recipe); each takes 15% of the GPU."""


def main(out: str | Path = "outputs/mini", seeds: tuple[int, ...] = (0, 1, 2), steps: int = 60,
         train_rows: int = 512, eval_rows: int = 192, sabotage: str | None = None, gpu: bool = False) -> dict:  # fmt: skip
    """The whole reproduction (see the module's docstring); returns what ``table.json`` holds.
    ``gpu``: CRO with :data:`GPU_CRO`; the models still build on the CPU (their SFT runs there) and evaluate
    on the GPU whenever there is one.
    ``sabotage``: ``constant-images`` (CRO on images made constant), ``deaf`` (CRO rewarded by a reasoner
    trained on descriptions whose colours were drawn apart from the image) or ``blind`` (CRO rewarded by
    the weak reasoner reading an empty caption: :mod:`racro_trl.mini.sabotage`)."""
    from ..evaluation.evaluate import load_benchmark

    started = time.time()
    out = Path(out)
    data = out / "data"
    if not (data / "train.parquet").exists():
        task.write_tiles_data(data, n=train_rows, eval_rows=eval_rows)  # make-sample-data --task tiles
    held = len(load_benchmark(data / "Tiles.tsv"))
    if held != eval_rows:
        raise ValueError(
            f"{data / 'Tiles.tsv'} holds {held} rows, not --eval-rows {eval_rows}: use another --out"
        )
    rows = task.eval_rows_of(eval_rows)
    models = build_models(out / "models", deaf=sabotage == "deaf")
    built = time.time()
    extra = {
        "constant-images": ["--image_ablation", "constant"],
        "deaf": ["--reasoner_model", str(models.get("deaf"))],
        "blind": [
            "--reward_funcs",
            "racro_trl.mini.sabotage.caption_blind",
            "racro_trl.mini.rewards.malformed_caption_penalty",
        ],
    }
    env = {"RACRO_MINI_BLIND_REASONER": str(models["weak"])} if sabotage == "blind" else None
    if sabotage:
        out = out / f"sabotage-{sabotage}"
    flags = [*extra.get(sabotage, []), *(GPU_CRO if gpu else [])]
    runs = {s: cro(out, models, data, s, steps, flags, env) for s in seeds}
    trained = time.time()
    evals = {
        "start": _results(
            evaluate(out, "start", models["captioner"], models, data / "Tiles.tsv", "caption-only")
        )
    }
    mllm = _results(evaluate(out, "start", models["captioner"], models, data / "Tiles.tsv", "mllm-only"))["-"]
    for s, run in runs.items():
        evals[s] = _results(
            evaluate(
                out, f"cro-seed{s}", run / f"checkpoint-{steps}", models, data / "Tiles.tsv", "caption-only"
            )
        )
    settings = {
        f"{name} captioner + {role} reasoner": [accuracies(evals[k][role], rows) for k in keys]
        for name, keys in (("start", ["start"]), ("CRO", list(runs)))
        for role in ("weak", "strong")
    }
    settings["MLLM only (start captioner)"] = [accuracies(mllm, rows)]
    ceilings = ceiling(models, rows)
    for role, acc in ceilings.items():
        settings[f"ground-truth captions + {role} reasoner (ceiling)"] = [acc]
    needed = {"start": needed_share(evals["start"]["weak"], rows)}
    needed["CRO"] = spread([needed_share(evals[s]["weak"], rows) for s in runs])
    for group, held_out in TEMPLATE_GROUPS.items():
        needed[f"start, {group}"] = needed_share(evals["start"]["weak"], rows, held_out)
        needed[f"CRO, {group}"] = spread([needed_share(evals[s]["weak"], rows, held_out) for s in runs])
    images = {"start": per_image(evals["start"]["weak"], rows)}
    per_seed = [per_image(evals[s]["weak"], rows) for s in runs]
    for key in ("differ", "both_needed"):
        images[f"CRO {key}"] = spread([found[key] for found in per_seed])
    sampled = {s: sampled_captions(run) for s, run in runs.items()}
    text = table(settings)
    by_templates = table(settings, (*TEMPLATE_GROUPS, "mean"))
    examples = caption_examples(evals["start"]["weak"], evals[seeds[0]]["weak"], rows)
    report = {"table": settings, "needed_facts": needed, "same_image_two_questions": images, "sampled_in_cro": sampled, "seeds": list(seeds), "steps": steps, "sabotage": sabotage,
              "seconds": {"models": built - started, "cro": trained - built, "eval": time.time() - trained}}  # fmt: skip
    (out / "table.md").write_text(
        text + "\n\nBy the templates the questions are phrased in:\n\n" + by_templates + "\n"
    )
    (out / "table.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "captions.md").write_text(examples)
    figure(runs, settings, out / "figure.png")
    print(text)
    print(
        "\nby the templates the questions are phrased in (training templates: also CRO's):\n" + by_templates
    )
    print("\ncaptions stating both needed facts: " + caption_metric(needed))
    (differ, d_half), (both, b_half) = images["CRO differ"], images["CRO both_needed"]
    print(f"same image, two questions: the two captions differ: start {images['start']['differ']:.1f}%, CRO "
          f"{differ:.1f} +- {d_half:.1f}%; each states its own question's facts: start "
          f"{images['start']['both_needed']:.1f}%, CRO {both:.1f} +- {b_half:.1f}%")  # fmt: skip
    for seed, found in sampled.items():
        if not found:
            continue
        print(f"CRO seed {seed}, sampled captions, first and last 20 steps: " + "; ".join(
            f"{name}: name the needed tiles {f['names_needed']:.1f}%, most named pair {tuple(f['top_pair'])} "
            f"{f['top_pair_share']:.1f}%, reward {f['reward']:.2f}" for name, f in found.items()))  # fmt: skip
    print("\n" + examples)
    print(f"wrote {out}/table.md, table.json, figure.png, captions.md in {time.time() - started:.0f} s")
    return report

"""Run summaries: the reward table printed at the end of training and by ``racro report``."""

from __future__ import annotations

import json
from pathlib import Path

# Columns of the table, in order: (log key, header)
_COLUMNS = [
    ("step", "step"),
    ("reward", "reward"),
    ("reward_std", "reward_std"),
    ("rewards/caption_reasoner/mean", "caption_reasoner"),
    ("caption_reasoner/answer_extracted", "boxed_rate"),
    ("caption_reasoner/caption_leak", "leak_rate"),
    ("caption_reasoner/known_words", "known_words"),
    ("caption_reasoner/well_formed", "well_formed"),
    ("caption_reasoner/failed", "failed"),
    ("rewards/answer_accuracy/mean", "answer_accuracy"),
    ("completions/mean_length", "caption_len"),
    ("loss", "loss"),
    ("grad_norm", "grad_norm"),
    ("step_time", "step_s"),
    ("time/generation_s", "caption_gen_s"),
    ("time/reward_s", "reward_s"),
]


def reward_table(log_history: list[dict]) -> str:
    """A fixed-width table of the per-step training logs that carry a reward."""
    rows = [h for h in log_history if "reward" in h]
    columns = [(key, head) for key, head in _COLUMNS if any(key in h for h in rows)]
    by_answer = sorted({k for h in rows for k in h if "/reward_by_answer/" in k})
    at = next((i for i, (key, _) in enumerate(columns) if key == "loss"), len(columns))
    columns[at:at] = [(key, "r_" + key.rsplit("/", 1)[1]) for key in by_answer]
    if not rows:
        return "(no reward was logged)"
    widths = [max(len(head), 10) for _, head in columns]
    lines = ["  ".join(head.rjust(w) for (_, head), w in zip(columns, widths, strict=True))]
    for h in rows:
        cells = []
        for (key, _), w in zip(columns, widths, strict=True):
            value = h.get(key)
            cells.append(
                ("-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)).rjust(
                    w
                )
            )
        lines.append("  ".join(cells))
    return "\n".join(lines)


def load_log_history(output_dir: str | Path) -> list[dict]:
    """The log history of the newest ``trainer_state.json`` under ``output_dir``."""
    states = sorted(Path(output_dir).glob("**/trainer_state.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        raise FileNotFoundError(f"no trainer_state.json under {output_dir}")
    return json.loads(states[-1].read_text())["log_history"]


def audit_summary(audit_dir: str | Path, examples: int = 3) -> str:
    """Counts over the audit JSONL files, read one line at a time (constant memory, whatever the
    size): captions audited, answers extracted, mean reward, captions whose reasoner request failed,
    and captions flagged as stating the gold answer (``leak``), with the first ``examples`` of them."""
    files = sorted(Path(audit_dir).glob("*.jsonl"))
    records = answers = missing = failed = 0
    reward = 0.0
    leaks: list[dict] = []
    leak_count = 0
    for path in files:
        with path.open() as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                records += 1
                reward += r["reward"]
                answers += len(r["extracted"])
                missing += sum(a is None for a in r["extracted"])
                failed += bool(r.get("failed"))
                if r.get("leak"):
                    leak_count += 1
                    if len(leaks) < examples:
                        leaks.append(
                            {"file": path.name, "step": r.get("step"), "caption": r["caption"][:160]}
                        )
    if not records:
        return f"no audit records in {audit_dir}"
    lines = [
        f"audit: {records} captions audited, {answers} reasoner answers, {missing} without a \\boxed{{}} answer "
        f"(scored 0), {failed} failed requests (scored 0), mean reward {reward / records:.3f}",
        f"leaks: {leak_count} audited captions state the gold answer as an answer (caption_leak)",
    ]
    lines += [f"  leak at step {e['step']} ({e['file']}): {e['caption']!r}" for e in leaks]
    lines.append(f"audit records: {', '.join(str(f) for f in files)}")
    return "\n".join(lines)


def first_last_rewards(log_history: list[dict], window: int = 5) -> tuple[float, float]:
    """Mean logged reward of the first and of the last ``window`` steps.

    >>> first_last_rewards([{"reward": r} for r in (0.25, 0.25, 0.75, 1.0)], window=2)
    (0.25, 0.875)
    """
    rewards = [h["reward"] for h in log_history if "reward" in h]
    if len(rewards) < window:
        raise ValueError(f"{len(rewards)} logged rewards, fewer than the window of {window}")
    return sum(rewards[:window]) / window, sum(rewards[-window:]) / window


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on training and CI machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reward_curve(log_history: list[dict], path, chance: float | None = None, title: str = ""):
    """A PNG of the mean reward per step with its spread (reward_std), and the chance level if given;
    ``path``: a file name (returned as a Path) or a binary file object (returned as it is)."""
    plt = pyplot()
    rows = [h for h in log_history if "reward" in h]
    steps = [h["step"] for h in rows]
    mean = [h["reward"] for h in rows]
    std = [h.get("reward_std", 0.0) for h in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.fill_between(
        steps, [m - s for m, s in zip(mean, std, strict=True)], [m + s for m, s in zip(mean, std, strict=True)],
        alpha=0.2, label="± std over captions",
    )  # fmt: skip
    ax.plot(steps, mean, marker=".", label="mean reward")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", label=f"chance ({chance:.2f})")
    ax.set(xlabel="step", ylabel="caption reward", ylim=(-0.05, 1.05), title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return Path(path) if isinstance(path, (str, Path)) else path


def late_captions(audit_dir: str | Path, window: int = 5, grammar: str | None = None) -> dict:
    """What the captions of the last ``window`` audited steps earned and how they read, streamed from
    the audit JSONL files (constant memory): ``reward`` (mean), ``reward_by_answer`` (mean per gold
    answer), ``worst_answer`` (the gold answer with the lowest mean, and that mean), ``well_formed``
    (share of captions that match ``grammar`` whole; None without one) and ``captions`` (how many)."""
    from ..training.caption_health import grammar_match

    per_step: dict[int, dict] = {}  # step -> {"by_answer": {gold: [sum, n]}, "well_formed": int}
    for path in sorted(Path(audit_dir).glob("*.jsonl")):
        with path.open() as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                step = per_step.setdefault(r["step"], {"by_answer": {}, "well_formed": 0})
                total = step["by_answer"].setdefault(r["gold"], [0.0, 0])
                total[0] += r["reward"]
                total[1] += 1
                step["well_formed"] += bool(grammar and grammar_match(r["caption"], grammar))
    if not per_step:
        raise FileNotFoundError(f"no audit records in {audit_dir}")
    by_answer: dict[str, list] = {}
    well_formed = 0
    for step in sorted(per_step)[-window:]:
        for gold, (total, n) in per_step[step]["by_answer"].items():
            by_answer.setdefault(gold, [0.0, 0])
            by_answer[gold][0] += total
            by_answer[gold][1] += n
        well_formed += per_step[step]["well_formed"]
    captions = sum(n for _, n in by_answer.values())
    means = {gold: total / n for gold, (total, n) in sorted(by_answer.items())}
    worst = min(means, key=means.get)
    return {
        "reward": sum(total for total, _ in by_answer.values()) / captions,
        "reward_by_answer": means,
        "worst_answer": (worst, means[worst]),
        "well_formed": well_formed / captions if grammar else None,
        "captions": captions,
    }


def last_captions(audit_dir: str | Path, n: int = 6) -> list[dict]:
    """Up to ``n`` audit records of the last audited step (of the first audit file that has it), one per
    gold answer first, streamed (constant memory)."""
    last: list[dict] = []
    for path in sorted(Path(audit_dir).glob("*.jsonl"))[:1]:
        with path.open() as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                if last and r["step"] != last[0]["step"]:
                    last = []
                last.append(r)
    seen: set[str] = set()
    firsts = [r for r in last if not (r["gold"] in seen or seen.add(r["gold"]))]
    return (firsts + [r for r in last if r not in firsts])[:n]

"""How often the reasoner answers a prompt without its caption: the baseline of the caption-gain
reward, asked once per prompt per run and kept in a file so a resumed run asks no prompt twice."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..reasoning import prompts as P
from ..reasoning.grading import parse_choices
from ..reasoning.reasoners import Reasoner, Sampling
from .reward_scoring import grade_answers


class BlindAccuracy:
    """Blind accuracy per prompt (``samples`` answers to the question alone), cached for the run.

    Args:
        samples: answers per prompt.
        grade: a grader of :data:`racro_trl.reasoning.grading.GRADERS`.
        cache: a JSONL file of ``{"key", "accuracy"}`` records, read at start and appended to; None: memory only.
    """

    def __init__(self, samples: int, grade: Callable, cache: str | Path | None = None):
        self.samples, self.grade = samples, grade
        self.cache = Path(cache) if cache else None
        self.known: dict[str, float] = {}
        if self.cache is not None and self.cache.exists():
            with self.cache.open() as f:
                self.known = {r["key"]: r["accuracy"] for r in map(json.loads, f)}

    @staticmethod
    def key(question: str, gold) -> str:
        return json.dumps([question, str(gold)])

    def __call__(
        self, reasoner: Reasoner, question: list[str], answer: list, sampling: Sampling
    ) -> list[float]:
        """Each prompt's blind accuracy; prompts not seen before are asked now, in one call (a failed
        request leaves its prompt for the next call, scoring 0 meanwhile)."""
        keys = [self.key(q, g) for q, g in zip(question, answer, strict=True)]
        new = list(dict.fromkeys(k for k in keys if k not in self.known))
        if new:
            pairs = [json.loads(k) for k in new]
            seeded = sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + 500_009)
            chats = [P.reasoner_blind_messages(q) for q, _ in pairs]
            reply = reasoner.generate(chats, self.samples, seeded, partial=True)
            scored = {}
            for key, (q, gold), outs, cut in zip(new, pairs, reply.texts, reply.truncated, strict=True):
                if outs is not None:
                    scores = [s for _, s in grade_answers(self.grade, outs, cut, gold, parse_choices(q))]
                    scored[key] = sum(scores) / len(scores)
            self.known.update(scored)
            self._store(scored)
        return [self.known.get(k, 0.0) for k in keys]

    def _store(self, scored: dict[str, float]) -> None:
        if self.cache is None or not scored:
            return
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        with self.cache.open("a") as f:
            f.writelines(json.dumps({"key": k, "accuracy": a}) + "\n" for k, a in scored.items())

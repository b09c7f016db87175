"""The CRO reward's arithmetic, without I/O: reasoner answers and gold answers in, rewards, one record
per caption and the call's logged figures out (:class:`racro_trl.training.rewards.CaptionReward`)."""

from __future__ import annotations

from collections.abc import Callable

from ..reasoning.grading import caption_leak, parse_choices
from ..reasoning.reasoners import Answers
from .caption_health import mean_known_words, well_formed_share


def grade_answers(
    grade: Callable, outputs: list[str], truncated: list[bool] | None, gold: str, choices: dict
):
    """(extracted answer, score) of each of one prompt's reasoner answers; ``truncated`` None: none was cut."""
    cut = truncated or [False] * len(outputs)
    return [grade(o, gold, choices, t) for o, t in zip(outputs, cut, strict=True)]


def score_captions(
    captions: list[str],
    reply: Answers,
    question: list[str],
    answer: list,
    grade: Callable,
    blind: list[float] | None = None,
) -> tuple[list[float], list[dict]]:
    """Each caption's reward, the mean score of its reasoner answers (minus the prompt's blind accuracy
    when ``blind`` is given), and its record: question, gold, caption, answers, extracted answers,
    scores, truncation, leak and failure flags, reward. A failed request (no answers) scores 0.

    >>> from racro_trl.reasoning.grading import GRADERS
    >>> reply = Answers([["\\\\boxed{red}", "\\\\boxed{blue}"], None], [[False, False], None], errors={1: "HTTP 500"})
    >>> rewards, records = score_captions(["It is red.", "?"], reply, ["Colour?"] * 2, ["red"] * 2, GRADERS["default"])
    >>> rewards, records[0]["extracted"], records[1]["failed"]
    ([0.5, 0.0], ['red', 'blue'], 'HTTP 500')
    """
    rewards, records = [], []
    rows = zip(captions, reply.texts, reply.truncated, question, answer, strict=True)
    for i, (caption, outs, cut, q, gold) in enumerate(rows):
        choices = parse_choices(q)
        outs = outs or []
        cut = cut or [False] * len(outs)
        graded = grade_answers(grade, outs, cut, str(gold), choices)
        scores = [score for _, score in graded]
        accuracy = sum(scores) / len(scores) if scores else 0.0
        record = {
            "question": q,
            "gold": str(gold),
            "caption": caption,
            "reasoner_outputs": outs,
            "extracted": [pred for pred, _ in graded],
            "scores": scores,
            "truncated": cut,
            "leak": caption_leak(caption, str(gold), choices),
            "failed": reply.errors.get(i),
        }
        if blind is not None:
            record["accuracy"], record["blind_accuracy"] = accuracy, blind[i]
            accuracy -= blind[i]
        record["reward"] = accuracy
        rewards.append(accuracy)
        records.append(record)
    return rewards, records


def _mean(values) -> float:
    values = list(values)
    return sum(values) / max(len(values), 1)


def batch_stats(
    records: list[dict],
    reply: Answers,
    grammar: str | None = None,
    answer_classes: list[str] | None = None,
) -> dict[str, float]:
    """The figures a reward call logs about its own captions and answers: ``reward_mean``,
    ``answer_extracted``, ``caption_chars``, ``caption_leak`` (share of captions that state the gold
    answer as an answer, :func:`racro_trl.reasoning.grading.caption_leak`), ``reasoner_seconds`` (from the
    requests' start), ``reasoner_tokens_per_second``; how the captions read
    (:mod:`racro_trl.training.caption_health`): ``known_words`` (share of their words that are English
    words), ``well_formed`` (with ``grammar``: share matched whole); ``reward_by_answer/<answer>`` (the
    mean reward of the captions whose gold answer is ``<answer>``, for each of ``answer_classes``
    present); with blind accuracies, ``accuracy``, ``blind_accuracy`` and ``language_shortcut_rate``.
    Counts over all ranks are the caller's."""
    captions = [r["caption"] for r in records]
    answers = [a for r in records for a in r["extracted"]]
    stats = {
        "reward_mean": _mean(r["reward"] for r in records),
        "answer_extracted": 1 - answers.count(None) / max(len(answers), 1),
        "caption_chars": _mean(len(c) for c in captions),
        "caption_leak": _mean(r["leak"] for r in records),
        "known_words": mean_known_words(captions),
        "reasoner_seconds": reply.seconds,
    }
    if grammar is not None:
        stats["well_formed"] = well_formed_share(captions, grammar)
    for gold in answer_classes or []:
        scored = [r["reward"] for r in records if r["gold"] == gold]
        if scored:
            stats[f"reward_by_answer/{gold}"] = _mean(scored)
    if reply.tokens:
        stats["reasoner_tokens_per_second"] = reply.tokens / max(reply.seconds, 1e-9)
    if records and "blind_accuracy" in records[0]:
        per_prompt = {(r["question"], r["gold"]): r["blind_accuracy"] for r in records}
        stats["accuracy"] = _mean(r["accuracy"] for r in records)
        stats["blind_accuracy"] = _mean(per_prompt.values())
        stats["language_shortcut_rate"] = _mean(b >= 0.5 for b in per_prompt.values())
    return stats

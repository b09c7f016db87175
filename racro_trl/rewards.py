"""Rewards for GRPOTrainer: the CRO caption reward and the registry of reward functions by name.

A reward function takes the completions of one generation batch plus the dataset columns
(``question``, ``answer``, ...) as keyword lists and returns one float per completion. The name a
function is registered and logged under (``rewards/<name>/mean``) is part of the interface: renaming
it breaks dashboards.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from . import prompts as P
from .grading import extract_answer, grade, parse_choices
from .reasoners import Reasoner, Sampling

logger = logging.getLogger(__name__)


def completion_text(completion) -> str:
    """The text of a completion, conversational (``[{"role", "content"}]``) or plain."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"]
    if isinstance(content, list):  # content blocks
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return content


def _process_index() -> int:
    from accelerate import PartialState

    return PartialState().process_index


class CaptionReward:
    """CRO: a caption is worth how often a frozen text reasoner, reading only the caption and the
    question, reaches the ground truth.

    For every caption the reasoner gets the reward chat of the original code (system "You are a
    helpful assistant."; caption, question, "put the final answer in \\boxed{}"); all captions of the
    local batch go to the reasoner in ONE call, ``num_samples`` answers each. The reward is the
    fraction of answers whose last ``\\boxed{}`` grades equal to the gold answer (1.0 / 0.0 for one
    sample). An answer without a box, e.g. a truncated one, scores 0.0 and is counted.

    Args:
        reasoner: a :class:`Reasoner`, or a zero-argument factory called at the first reward call,
            so that the reasoner is created in the training process, after the policy, outside any
            ZeRO-3 ``zero.Init`` (see :func:`racro_trl.reasoners.build_reasoner`).
        num_samples: reasoner answers per caption (k); the reward is their mean.
        sampling: the reasoner's sampling settings.
        audit_dir: where ``caption_reasoner-rank<r>.jsonl`` gets one record per caption (caption,
            reasoner chat, answers, extracted answers, gold, scores, reward); None: no audit.
    """

    def __init__(
        self,
        reasoner: Reasoner | Callable[[], Reasoner],
        *,
        num_samples: int = 1,
        sampling: Sampling | None = None,
        audit_dir: str | Path | None = None,
    ):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.__name__ = "caption_reasoner"
        self._reasoner = reasoner if hasattr(reasoner, "generate") else None
        self._factory = None if self._reasoner is not None else reasoner
        self.num_samples = num_samples
        self.sampling = sampling or Sampling()
        self.audit_dir = Path(audit_dir) if audit_dir else None
        self.audit_path: Path | None = None
        self.calls = 0
        self._last_step, self._calls_this_step = None, 0
        self.last_batch: list[dict] = []  # the last call's records (+ first image), for logging tables

    @property
    def reasoner(self) -> Reasoner:
        if self._reasoner is None:
            self._reasoner = self._factory()
        return self._reasoner

    def __call__(
        self,
        prompts,
        completions,
        question,
        answer,
        trainer_state=None,
        log_metric=None,
        log_extra=None,
        **kwargs,
    ):
        captions = [completion_text(c) for c in completions]
        chats = [P.reasoner_reward_messages(c, q) for c, q in zip(captions, question, strict=True)]
        sampling = self.sampling
        if sampling.seed is not None:
            # A fresh draw for every step, call and rank, and the same draws again after a resume:
            # the seed follows the global step, not this object's call count.
            step = getattr(trainer_state, "global_step", None)
            self._calls_this_step = self._calls_this_step + 1 if step == self._last_step else 0
            self._last_step = step
            offset = 1_000_003 * (self.calls if step is None else step) + 101 * self._calls_this_step
            sampling = replace(sampling, seed=sampling.seed + offset + 10_007 * _process_index())
        start = time.perf_counter()
        outputs = self.reasoner.generate(chats, self.num_samples, sampling)
        seconds = time.perf_counter() - start
        self.calls += 1

        rewards, records = [], []
        for caption, chat, outs, q, gold in zip(captions, chats, outputs, question, answer, strict=True):
            choices = parse_choices(q)
            graded = [grade(o, str(gold), choices) for o in outs]
            scores = [score for _, score in graded]
            rewards.append(sum(scores) / len(scores))
            records.append(
                {
                    "caption": caption,
                    "reasoner_prompt": chat[-1]["content"],
                    "reasoner_outputs": outs,
                    "extracted": [pred for pred, _ in graded],
                    "gold": str(gold),
                    "scores": scores,
                    "reward": rewards[-1],
                }
            )

        extracted = sum(r["extracted"].count(None) for r in records)
        total = len(records) * self.num_samples
        stats = {
            "reward_mean": sum(rewards) / max(len(rewards), 1),
            "answer_extracted": 1 - extracted / max(total, 1),
            "caption_chars": sum(len(c) for c in captions) / max(len(captions), 1),
            "reasoner_seconds": seconds,
        }
        tokens = getattr(self.reasoner, "last_output_tokens", None)
        if tokens:
            stats["reasoner_tokens_per_second"] = tokens / max(seconds, 1e-9)
        if log_metric is not None:
            for key, value in stats.items():
                log_metric(f"{self.__name__}/{key}", value)
        if log_extra is not None:
            log_extra("reasoner_answer", [r["extracted"][0] for r in records])
        step = getattr(trainer_state, "global_step", None)
        self._audit(records, step, seconds)
        images = kwargs.get("images") or [None] * len(records)
        self.last_batch = [
            {**r, "question": q, "step": step, "image": imgs[0] if imgs else None}
            for r, q, imgs in zip(records, question, images, strict=True)
        ]
        logger.info(
            "caption_reasoner call %d (step %s): %d captions x %d samples in %.1fs, mean reward %.3f, no answer %d/%d",
            self.calls, step, len(captions), self.num_samples, seconds, stats["reward_mean"], extracted, total,
        )  # fmt: skip
        return rewards

    def _audit(self, records: list[dict], step: int | None, seconds: float) -> None:
        if self.audit_dir is None:
            return
        if self.audit_path is None:
            self.audit_dir.mkdir(parents=True, exist_ok=True)
            self.audit_path = self.audit_dir / f"{self.__name__}-rank{_process_index()}.jsonl"
        # Appended and flushed per call: a crash loses at most the batch being scored.
        with self.audit_path.open("a") as f:
            for i, record in enumerate(records):
                f.write(json.dumps({"step": step, "call": self.calls, "index": i, **record}) + "\n")

    def close(self) -> None:
        if self._reasoner is not None:
            self._reasoner.close()
            self._reasoner = None


def answer_accuracy(completions, answer, question=None, **kwargs) -> list[float]:
    """1.0 when the policy's own last ``\\boxed{}`` grades equal to the gold answer (CRO-GRPO stage).

    >>> answer_accuracy([[{"role": "assistant", "content": "so \\\\boxed{3}"}], "\\\\boxed{4}"], ["3", "3"])
    [1.0, 0.0]
    """
    questions = question or [""] * len(completions)
    return [
        grade(completion_text(c), str(gold), parse_choices(q))[1]
        for c, gold, q in zip(completions, answer, questions, strict=True)
    ]


def boxed_format(completions, **kwargs) -> list[float]:
    """1.0 when the completion ends with a complete ``\\boxed{}`` answer: a format shaping term."""
    return [float(extract_answer(completion_text(c)) is not None) for c in completions]


# name -> builder(script_args, output_dir) -> reward callable
REWARD_FUNCS: dict[str, Callable] = {
    "caption_reasoner": lambda args, output_dir: caption_reward_from_args(args, output_dir),
    "answer_accuracy": lambda args, output_dir: answer_accuracy,
    "boxed_format": lambda args, output_dir: boxed_format,
}


def caption_reward_from_args(args, output_dir: str | None) -> CaptionReward:
    """The CRO reward configured by the ``reasoner_*`` script arguments (reasoner built lazily)."""
    from .reasoners import build_reasoner

    def factory() -> Reasoner:
        return build_reasoner(
            args.reasoner_backend, args.reasoner_model, args.reasoner_url, **args.reasoner_kwargs()
        )

    sampling = Sampling(
        temperature=args.reasoner_temperature,
        top_p=args.reasoner_top_p,
        max_tokens=args.reasoner_max_tokens,
        seed=args.reasoner_seed,
    )
    audit_dir = Path(output_dir) / "audit" if (args.reward_audit and output_dir) else None
    # A server client costs nothing to make: connect now, so a wrong URL fails before the policy loads.
    reasoner = factory() if args.reasoner_backend == "openai" else factory
    return CaptionReward(
        reasoner, num_samples=args.reasoner_num_samples, sampling=sampling, audit_dir=audit_dir
    )


def resolve_reward_name(name: str) -> None:
    """Raise a ValueError listing the valid names if ``name`` is neither registered nor a dotted path."""
    if name not in REWARD_FUNCS and "." not in name:
        raise ValueError(
            f"unknown reward function {name!r}; valid names: {', '.join(sorted(REWARD_FUNCS))}, "
            "or a dotted path such as my_pkg.rewards.my_reward"
        )


def get_reward_funcs(names: list[str], args, output_dir: str | None) -> list[Callable]:
    """Build the reward callables for ``names`` (registered names or ``module.function`` paths)."""
    funcs = []
    for name in names:
        resolve_reward_name(name)
        if name in REWARD_FUNCS:
            funcs.append(REWARD_FUNCS[name](args, output_dir))
        else:
            module, _, attr = name.rpartition(".")
            try:
                funcs.append(getattr(importlib.import_module(module), attr))
            except (ImportError, AttributeError) as error:
                raise ValueError(f"reward function {name!r} could not be imported: {error}") from error
    return funcs

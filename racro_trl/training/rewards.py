"""Rewards for GRPOTrainer: the CRO caption reward and the registry of reward functions by name.

A reward function takes the completions of one generation batch plus the dataset columns
(``question``, ``answer``, ...) as keyword lists and returns one float per completion. The name a
function is registered and logged under (``rewards/<name>/mean``) is part of the interface: renaming
it breaks dashboards.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..reasoning import prompts as P
from ..reasoning.grading import GRADERS, caption_leak, extract_answer, parse_choices
from ..reasoning.reasoners import Answers, Reasoner, ReasonerError, Sampling
from .blind_accuracy import BlindAccuracy
from .prefetch import Prefetch
from .ranks import process_index, sum_over_processes
from .reward_audit import AuditWriter
from .reward_scoring import batch_stats, score_captions

logger = logging.getLogger(__name__)


def completion_text(completion) -> str:
    """The text of a completion, conversational (``[{"role", "content"}]``) or plain."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"]
    if isinstance(content, list):  # content blocks
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return content


class CaptionReward:
    """CRO: a caption is worth how often a frozen text reasoner, reading only the caption and the
    question, reaches the ground truth.

    For every caption the reasoner gets the reward chat of the original code (system "You are a
    helpful assistant."; caption, question, "put the final answer in \\boxed{}"); all captions of the
    local batch go to the reasoner in ONE call, ``num_samples`` answers each. The reward is the
    fraction of answers whose last ``\\boxed{}`` grades equal to the gold answer (1.0 / 0.0 for one
    sample). An answer without a box, e.g. a truncated one, scores 0.0 and is counted.

    Logged per call as ``<name>/<figure>``: the figures of :func:`~racro_trl.training.reward_scoring.batch_stats`;
    ``failed`` (share of the call's captions, all ranks, whose request failed for good: they score 0),
    ``failed_total`` (all ranks, since the start) and ``sent_ahead`` (1 when the call's answers were
    requested ahead, see Overlap).

    Its parts: the arithmetic (:mod:`racro_trl.training.reward_scoring`), the audit
    (:class:`~racro_trl.training.reward_audit.AuditWriter`), the caption-gain baseline
    (:class:`~racro_trl.training.blind_accuracy.BlindAccuracy`) and the requests sent ahead
    (:class:`~racro_trl.training.prefetch.Prefetch`). ``batch_hooks``: callables given each call's records
    (with ``step`` and the prompt's first ``image``), e.g. the wandb caption table.

    Overlap (:class:`~racro_trl.training.prefetch.SendsAhead`): :meth:`send` starts a batch's reasoner
    requests in a background thread as soon as its captions exist (``CROTrainer`` calls it right after
    sampling, before the policy's log-prob pass); the reward call for the same captions and questions
    then only collects the answers. The requests, seeds, rewards and audit records are the sequential
    path's (tests/test_overlap.py).

    Args:
        reasoner: a :class:`Reasoner`, or a zero-argument factory called at the first reward call,
            so that the reasoner is created in the training process, after the policy, outside any
            ZeRO-3 ``zero.Init`` (see :func:`racro_trl.reasoning.reasoners.build_reasoner`).
        num_samples: reasoner answers per caption (k); the reward is their mean.
        sampling: the reasoner's sampling settings.
        audit_dir: where ``<name>-rank<r>.jsonl`` gets the audit records; None: no audit.
        audit_captions: records per optimizer step over all ranks (:class:`AuditWriter`); -1: all.
        grader: ``default`` or ``strict`` (:data:`racro_trl.reasoning.grading.GRADERS`).
        max_failed_fraction: the run stops, naming the reasoner, when more than this share of one
            call's captions (all ranks) failed; below it, failed captions score 0 and are counted.
        blind_samples: > 0 makes this the caption-gain reward: every prompt is also answered once
            without its caption (``blind_samples`` answers, cached per prompt for the run, in
            ``blind_cache``), and the reward is accuracy with the caption minus blind accuracy.
            Also logged: ``blind_accuracy`` and ``language_shortcut_rate``, the share of the call's
            prompts the blind reasoner solves (blind accuracy >= 0.5).
        grammar: a regular expression a well-formed caption matches whole (``well_formed``); None: not logged.
        answer_classes: gold answers whose mean reward is logged apiece; None: none.
        name: the registered name the reward is logged under.
        overlap: ``CROTrainer`` sends this reward's requests ahead (:meth:`send`), right after sampling.
    """

    def __init__(
        self,
        reasoner: Reasoner | Callable[[], Reasoner],
        *,
        num_samples: int = 1,
        sampling: Sampling | None = None,
        audit_dir: str | Path | None = None,
        audit_captions: int = -1,
        grader: str = "default",
        max_failed_fraction: float = 0.5,
        blind_samples: int = 0,
        blind_cache: str | Path | None = None,
        grammar: str | None = None,
        answer_classes: list[str] | None = None,
        name: str = "caption_reasoner",
        overlap: bool = False,
    ):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if grader not in GRADERS:
            raise ValueError(f"grader must be one of {', '.join(GRADERS)}, got {grader!r}")
        self.__name__ = name
        self.overlap = overlap
        self._reasoner = reasoner if hasattr(reasoner, "generate") else None
        self._factory = None if self._reasoner is not None else reasoner
        self.num_samples = num_samples
        self.sampling = sampling or Sampling()
        self.grade = GRADERS[grader]
        self.max_failed_fraction = max_failed_fraction
        self.audit = AuditWriter(audit_dir, name, audit_captions) if audit_dir else None
        self.blind = BlindAccuracy(blind_samples, self.grade, blind_cache) if blind_samples else None
        self.grammar = grammar
        self.answer_classes = [str(a) for a in answer_classes or []]
        self.batch_hooks: list[Callable[[list[dict]], None]] = []
        self.calls = 0
        self.failed_total = 0
        self._explained: set[str] = set()
        self._last_step, self._calls_this_step = None, 0
        self._prefetch = Prefetch(name)

    @property
    def reasoner(self) -> Reasoner:
        if self._reasoner is None:
            self._reasoner = self._factory()
        return self._reasoner

    def _seeded(self, trainer_state) -> Sampling:
        sampling = self.sampling
        if sampling.seed is not None:
            # A fresh draw for every step, call and rank, and the same draws again after a resume:
            # the seed follows the global step, not this object's call count.
            step = getattr(trainer_state, "global_step", None)
            self._calls_this_step = self._calls_this_step + 1 if step == self._last_step else 0
            self._last_step = step
            offset = 1_000_003 * (self.calls if step is None else step) + 101 * self._calls_this_step
            sampling = replace(sampling, seed=sampling.seed + offset + 10_007 * process_index())
        return sampling

    def __call__(self, prompts, completions, question, answer, trainer_state=None, **kwargs):
        """One reward per completion; ``log_metric`` and ``log_extra`` (TRL's) receive the figures."""
        log_metric, log_extra = kwargs.get("log_metric"), kwargs.get("log_extra")
        captions = [completion_text(c) for c in completions]
        sampling, reply = self._prefetch.collect(captions, list(question))
        sent_ahead = reply is not None
        if not sent_ahead:  # nothing sent ahead for these captions: ask now
            sampling = self._seeded(trainer_state)
            reply = self._ask(captions, question, sampling)
        blind = self.blind(self.reasoner, question, answer, sampling) if self.blind else None
        self.calls += 1
        failed, total = sum_over_processes(len(reply.errors), len(captions))
        self.failed_total += failed
        self._explain(reply.errors)
        if failed > self.max_failed_fraction * total:
            url = getattr(self.reasoner, "url", getattr(self.reasoner, "model", "the reasoner"))
            raise ReasonerError(
                f"{failed} of {total} captions (all ranks) got no answer from the reasoner at {url}, more than "
                f"reasoner_max_failed_fraction={self.max_failed_fraction}; first error here: "
                f"{next(iter(reply.errors.values()), 'on another rank')}"
            )
        rewards, records = score_captions(captions, reply, question, answer, self.grade, blind)
        stats = batch_stats(records, reply, self.grammar, self.answer_classes)
        stats.update(
            failed=failed / max(total, 1), failed_total=self.failed_total, sent_ahead=float(sent_ahead)
        )
        if log_metric is not None:
            for key, value in stats.items():
                log_metric(f"{self.__name__}/{key}", value)
        if log_extra is not None:
            log_extra("reasoner_answer", [(r["extracted"] or [None])[0] for r in records])
        step = getattr(trainer_state, "global_step", None)
        images = kwargs.get("images") or [None] * len(records)
        if self.audit is not None:
            self.audit.write(records, step, self.calls, images)
        if self.batch_hooks:
            batch = [
                {**r, "step": step, "image": i[0] if i else None}
                for r, i in zip(records, images, strict=True)
            ]
            for hook in self.batch_hooks:
                hook(batch)
        answers = [a for r in records for a in r["extracted"]]
        logger.info(
            "%s call %d (step %s): %d captions x %d samples in %.1fs, mean reward %.3f, no answer %d/%d, "
            "leaks %d, failed %d",
            self.__name__, self.calls, step, len(captions), self.num_samples, reply.seconds, stats["reward_mean"],
            answers.count(None), len(answers), sum(r["leak"] for r in records), len(reply.errors),
        )  # fmt: skip
        return rewards

    def send(self, completions, question, trainer_state=None) -> None:
        """Start the reasoner requests for these captions in the background; the reward call with the
        same captions and questions collects them (any other call asks anew)."""
        captions = [completion_text(c) for c in completions]
        self._prefetch.start(captions, list(question), self._seeded(trainer_state), self._ask)

    def _ask(self, captions: list[str], question: list[str], sampling: Sampling) -> Answers:
        """The reasoner's answers to every caption; a chat whose request failed for good answers None
        (``partial``), its error in ``errors``."""
        chats = [P.reasoner_reward_messages(c, q) for c, q in zip(captions, question, strict=True)]
        return self.reasoner.generate(chats, self.num_samples, sampling, partial=True)

    def _explain(self, errors: dict[int, str]) -> None:
        """Log each kind of reasoner failure once (the counters carry the rest)."""
        for error in errors.values():
            kind = error.split(":", 1)[0]
            if kind in self._explained:
                continue
            self._explained.add(kind)
            hint = ""
            if " 4" in kind:
                hint = (
                    " 4xx answers are final (not retried). A prompt over the reasoner's context length: raise the "
                    "server's --max-model-len or lower max_completion_length / reasoner_max_tokens."
                )
            logger.warning(
                "%s: a caption's reasoner request failed for good (%s); such captions score 0 and count in "
                "%s/failed, the run goes on up to reasoner_max_failed_fraction=%s.%s Further %s failures are "
                "only counted.",
                self.__name__, error, self.__name__, self.max_failed_fraction, hint, kind,
            )  # fmt: skip

    def close(self) -> None:
        self._prefetch.close()
        if self._reasoner is not None:
            self._reasoner.close()
            self._reasoner = None


def answer_accuracy(completions, answer, question=None, grader: str = "default", **kwargs) -> list[float]:
    """1.0 when the policy's own last ``\\boxed{}`` grades equal to the gold answer (CRO-GRPO stage).

    >>> answer_accuracy([[{"role": "assistant", "content": "so \\\\boxed{3}"}], "\\\\boxed{4}"], ["3", "3"])
    [1.0, 0.0]
    """
    questions = question or [""] * len(completions)
    return [
        GRADERS[grader](completion_text(c), str(gold), parse_choices(q))[1]
        for c, gold, q in zip(completions, answer, questions, strict=True)
    ]


def boxed_format(completions, **kwargs) -> list[float]:
    """1.0 when the completion ends with a complete ``\\boxed{}`` answer: a format shaping term."""
    return [float(extract_answer(completion_text(c)) is not None) for c in completions]


def caption_leak_penalty(completions, question, answer, **kwargs) -> list[float]:
    """-1.0 for a caption that states the gold answer as an answer (:func:`racro_trl.reasoning.grading.caption_leak`),
    else 0.0. Opt-in: add it to reward_funcs with a weight in reward_weights, e.g. [1.0, 0.5].

    >>> caption_leak_penalty(["Five dots. The answer is 5.", "Five dots."], ["How many?"] * 2, ["5", "5"])
    [-1.0, 0.0]
    """
    return [
        -1.0 if caption_leak(completion_text(c), str(gold), parse_choices(q)) else 0.0
        for c, q, gold in zip(completions, question, answer, strict=True)
    ]


def _named(func: Callable, name: str, **fixed) -> Callable:
    """``func`` with ``fixed`` keyword arguments, logged under ``name`` (TRL logs ``__name__``)."""

    def bound(*args, **kwargs):
        return func(*args, **fixed, **kwargs)

    bound.__name__ = name
    return bound


# The rewards that call the reasoner (they take the reasoner_* settings; use one of them per run).
REASONER_REWARDS = ("caption_reasoner", "caption_gain")

# name -> builder(script_args, output_dir) -> reward callable
REWARD_FUNCS: dict[str, Callable] = {
    "caption_reasoner": lambda args, output_dir: caption_reward_from_args(args, output_dir),
    "caption_gain": lambda args, output_dir: caption_reward_from_args(args, output_dir, gain=True),
    "caption_leak_penalty": lambda args, output_dir: caption_leak_penalty,
    "answer_accuracy": lambda args, output_dir: _named(
        answer_accuracy, "answer_accuracy", grader=getattr(args, "grader", "default")
    ),
    "boxed_format": lambda args, output_dir: boxed_format,
}


def caption_reward_from_args(args, output_dir: str | None, gain: bool = False) -> CaptionReward:
    """The CRO reward configured by the ``reasoner_*`` script arguments (reasoner built lazily);
    ``gain``: the caption-gain variant, logged as ``caption_gain``."""
    from ..reasoning.reasoners import build_reasoner

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
    name = "caption_gain" if gain else "caption_reasoner"
    audit_dir = Path(output_dir) / "audit" if (args.reward_audit and output_dir) else None
    blind_cache = (
        Path(output_dir) / f"blind_accuracy-rank{process_index()}.jsonl" if (gain and output_dir) else None
    )
    # A server client costs nothing to make: connect now, so a wrong URL fails before the policy loads.
    reasoner = factory() if args.reasoner_backend == "openai" else factory
    return CaptionReward(
        reasoner,
        num_samples=args.reasoner_num_samples,
        sampling=sampling,
        audit_dir=audit_dir,
        audit_captions=args.reward_audit_captions,
        grader=args.grader,
        max_failed_fraction=args.reasoner_max_failed_fraction,
        blind_samples=args.reasoner_blind_samples if gain else 0,
        blind_cache=blind_cache,
        grammar=args.reward_caption_grammar,
        answer_classes=args.reward_answer_classes,
        name=name,
        # in-process engines share the training GPU and process: only a served reasoner is sent ahead
        overlap=args.reasoner_overlap and args.reasoner_backend == "openai",
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

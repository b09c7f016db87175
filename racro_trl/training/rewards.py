"""Rewards for GRPOTrainer: the CRO caption reward and the registry of reward functions by name.

A reward function takes the completions of one generation batch plus the dataset columns
(``question``, ``answer``, ...) as keyword lists and returns one float per completion. The name a
function is registered and logged under (``rewards/<name>/mean``) is part of the interface: renaming
it breaks dashboards.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..reasoning import prompts as P
from ..reasoning.grading import GRADERS, caption_leak, extract_answer, parse_choices
from ..reasoning.reasoners import Answers, Reasoner, ReasonerError, Sampling
from .caption_health import mean_known_words, well_formed_share

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


def _sum_over_processes(*counts: int) -> tuple[int, ...]:
    """``counts`` summed over the training processes (every process calls the reward at the same
    point, so this collective is matched on all of them); as they are in a single process."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        return counts
    import torch
    from accelerate.utils import reduce

    total = reduce(torch.tensor(counts, dtype=torch.float64, device=state.device), "sum")
    return tuple(int(x) for x in total.tolist())


class CaptionReward:
    """CRO: a caption is worth how often a frozen text reasoner, reading only the caption and the
    question, reaches the ground truth.

    For every caption the reasoner gets the reward chat of the original code (system "You are a
    helpful assistant."; caption, question, "put the final answer in \\boxed{}"); all captions of the
    local batch go to the reasoner in ONE call, ``num_samples`` answers each. The reward is the
    fraction of answers whose last ``\\boxed{}`` grades equal to the gold answer (1.0 / 0.0 for one
    sample). An answer without a box, e.g. a truncated one, scores 0.0 and is counted.

    Logged per call (``<name>/...``): ``reward_mean``, ``answer_extracted``, ``caption_chars``,
    ``caption_leak`` (share of captions that state the gold answer as an answer,
    :func:`racro_trl.reasoning.grading.caption_leak`), ``failed`` (share of the call's captions, all ranks,
    whose request failed for good: they score 0) and ``failed_total`` (all ranks, since the start),
    ``reasoner_seconds`` (from the requests' start), ``reasoner_tokens_per_second``, ``sent_ahead``
    (1 when the call's answers were requested ahead, see Overlap); how the captions read
    (:mod:`racro_trl.training.caption_health`): ``known_words`` (share of their words that are English words),
    ``well_formed`` (with ``grammar``: share matched whole); ``reward_by_answer/<answer>`` (the mean
    reward of the captions whose gold answer is ``<answer>``, for each of ``answer_classes`` in the call).

    Overlap: :meth:`send` starts a batch's reasoner requests in a background thread as soon as its
    captions exist (``CROTrainer`` calls it right after sampling, before the policy's log-prob pass);
    the reward call for the same captions and questions then only collects the answers. The requests,
    seeds, rewards and audit records are the sequential path's (tests/test_overlap.py).

    Args:
        reasoner: a :class:`Reasoner`, or a zero-argument factory called at the first reward call,
            so that the reasoner is created in the training process, after the policy, outside any
            ZeRO-3 ``zero.Init`` (see :func:`racro_trl.reasoning.reasoners.build_reasoner`).
        num_samples: reasoner answers per caption (k); the reward is their mean.
        sampling: the reasoner's sampling settings.
        audit_dir: where ``<name>-rank<r>.jsonl`` gets the audit records (question, caption, answers,
            extracted answers, gold, scores, reward, leak and failure flags); None: no audit.
        audit_captions: records per optimizer step over all ranks (each rank writes its share, the
            first captions of its batch; leaked and failed captions get as many again); -1: all.
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
        self.audit_dir = Path(audit_dir) if audit_dir else None
        self.audit_captions = audit_captions
        self.audit_path: Path | None = None
        self._audited: dict = {"step": None, "kept": 0, "flagged": 0}
        self.blind_samples = blind_samples
        self.blind_cache = Path(blind_cache) if blind_cache else None
        self.blind: dict[str, float] = {}
        self.grammar = grammar
        self.answer_classes = [str(a) for a in answer_classes or []]
        if self.blind_cache is not None and self.blind_cache.exists():  # a resumed run scores no prompt twice
            with self.blind_cache.open() as f:
                self.blind = {r["key"]: r["accuracy"] for r in map(json.loads, f)}
        self.calls = 0
        self.failed_total = 0
        self._explained: set[str] = set()
        self._last_step, self._calls_this_step = None, 0
        self._sent: tuple | None = None  # (captions, questions, sampling, Future) of send()
        self._sender = None
        self.last_batch: list[dict] = []  # the last call's records (+ first image), for logging tables

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
            sampling = replace(sampling, seed=sampling.seed + offset + 10_007 * _process_index())
        return sampling

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
        sampling, reply = self._collect(captions, list(question))
        sent_ahead = reply is not None
        if not sent_ahead:  # nothing sent ahead for these captions: ask now
            sampling = self._seeded(trainer_state)
            reply = self._ask(captions, question, sampling)
        outputs, truncated, errors = reply.texts, reply.truncated, reply.errors
        blind = self._blind_accuracy(question, answer, sampling) if self.blind_samples else None
        self.calls += 1
        failed, total = _sum_over_processes(len(errors), len(captions))
        self.failed_total += failed
        self._explain(errors)
        if failed > self.max_failed_fraction * total:
            url = getattr(self.reasoner, "url", getattr(self.reasoner, "model", "the reasoner"))
            raise ReasonerError(
                f"{failed} of {total} captions (all ranks) got no answer from the reasoner at {url}, more than "
                f"reasoner_max_failed_fraction={self.max_failed_fraction}; first error here: "
                f"{next(iter(errors.values()), 'on another rank')}"
            )

        rewards, records = [], []
        for i, (caption, outs, q, gold) in enumerate(zip(captions, outputs, question, answer, strict=True)):
            choices = parse_choices(q)
            cut = truncated[i] or [False] * len(outs or [])
            graded = self._grade(outs or [], cut, str(gold), choices)
            scores = [score for _, score in graded]
            accuracy = sum(scores) / len(scores) if scores else 0.0
            record = {
                "question": q,
                "gold": str(gold),
                "caption": caption,
                "reasoner_outputs": outs or [],
                "extracted": [pred for pred, _ in graded],
                "scores": scores,
                "truncated": cut,
                "leak": caption_leak(caption, str(gold), choices),
                "failed": errors.get(i),
            }
            if blind is not None:
                record["accuracy"], record["blind_accuracy"] = accuracy, blind[i]
                accuracy -= blind[i]
            record["reward"] = accuracy
            rewards.append(accuracy)
            records.append(record)

        answers = [a for r in records for a in r["extracted"]]
        stats = {
            "reward_mean": sum(rewards) / max(len(rewards), 1),
            "answer_extracted": 1 - answers.count(None) / max(len(answers), 1),
            "caption_chars": sum(len(c) for c in captions) / max(len(captions), 1),
            "caption_leak": sum(r["leak"] for r in records) / max(len(records), 1),
            "known_words": mean_known_words(captions),
            "failed": failed / max(total, 1),
            "failed_total": self.failed_total,
            "reasoner_seconds": reply.seconds,
            "sent_ahead": float(sent_ahead),
        }
        if self.grammar is not None:
            stats["well_formed"] = well_formed_share(captions, self.grammar)
        for gold in self.answer_classes:
            scored = [r["reward"] for r in records if r["gold"] == gold]
            if scored:
                stats[f"reward_by_answer/{gold}"] = sum(scored) / len(scored)
        if reply.tokens:
            stats["reasoner_tokens_per_second"] = reply.tokens / max(reply.seconds, 1e-9)
        if blind is not None:
            per_prompt = {self._key(q, g): b for q, g, b in zip(question, answer, blind, strict=True)}
            stats["accuracy"] = sum(r["accuracy"] for r in records) / max(len(records), 1)
            stats["blind_accuracy"] = sum(per_prompt.values()) / max(len(per_prompt), 1)
            stats["language_shortcut_rate"] = sum(b >= 0.5 for b in per_prompt.values()) / max(
                len(per_prompt), 1
            )
        if log_metric is not None:
            for key, value in stats.items():
                log_metric(f"{self.__name__}/{key}", value)
        if log_extra is not None:
            log_extra("reasoner_answer", [(r["extracted"] or [None])[0] for r in records])
        step = getattr(trainer_state, "global_step", None)
        images = kwargs.get("images") or [None] * len(records)
        self._audit(records, step, images)
        self.last_batch = [
            {**r, "step": step, "image": imgs[0] if imgs else None}
            for r, imgs in zip(records, images, strict=True)
        ]
        logger.info(
            "%s call %d (step %s): %d captions x %d samples in %.1fs, mean reward %.3f, no answer %d/%d, "
            "leaks %d, failed %d",
            self.__name__, self.calls, step, len(captions), self.num_samples, reply.seconds, stats["reward_mean"],
            answers.count(None), len(answers), sum(r["leak"] for r in records), len(errors),
        )  # fmt: skip
        return rewards

    def send(self, completions, question, trainer_state=None) -> None:
        """Start the reasoner requests for these captions in the background; the reward call with the
        same captions and questions collects them (any other call asks anew)."""
        from concurrent.futures import ThreadPoolExecutor

        captions, question = [completion_text(c) for c in completions], list(question)
        self._collect(None, None)  # one batch in flight at a time
        sampling = self._seeded(trainer_state)
        if self._sender is None:
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.__name__}-requests")
        future = self._sender.submit(self._ask, captions, question, sampling)
        self._sent = (captions, question, sampling, future)

    def _collect(self, captions: list[str] | None, question: list[str] | None) -> tuple:
        """(sampling, answers) sent ahead for exactly these captions and questions, else (None, None);
        a batch sent for other captions is awaited and dropped."""
        sent, self._sent = self._sent, None
        if sent is None:
            return None, None
        if (sent[0], sent[1]) == (captions, question):
            return sent[2], sent[3].result()
        if captions is not None:
            logger.warning(
                "%s: the reward call's captions are not those sent ahead; asking anew", self.__name__
            )
        with contextlib.suppress(Exception):
            sent[3].result()
        return None, None

    def _ask(self, captions: list[str], question: list[str], sampling: Sampling) -> Answers:
        """The reasoner's answers to every caption; a chat whose request failed for good answers None
        (``partial``), its error in ``errors``."""
        chats = [P.reasoner_reward_messages(c, q) for c, q in zip(captions, question, strict=True)]
        return self.reasoner.generate(chats, self.num_samples, sampling, partial=True)

    def _grade(self, outputs: list[str], truncated: list[bool], gold: str, choices: dict) -> list[tuple]:
        """(extracted answer, score) of each of one prompt's reasoner answers."""
        return [self.grade(o, gold, choices, t) for o, t in zip(outputs, truncated, strict=True)]

    @staticmethod
    def _key(question: str, gold) -> str:
        return json.dumps([question, str(gold)])

    def _blind_accuracy(self, question: list[str], answer: list, sampling: Sampling) -> list[float]:
        """Blind accuracy per prompt: the reasoner answers the question alone, once per prompt per run
        (``blind_samples`` answers); a failed request leaves the prompt for the next call."""
        keys = [self._key(q, g) for q, g in zip(question, answer, strict=True)]
        new = list(dict.fromkeys(k for k in keys if k not in self.blind))
        if new:
            pairs = [json.loads(k) for k in new]
            blind_sampling = (
                sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + 500_009)
            )
            reply = self.reasoner.generate(
                [P.reasoner_blind_messages(q) for q, _ in pairs],
                self.blind_samples,
                blind_sampling,
                partial=True,
            )
            scored = {}
            for key, (q, gold), outs, cut in zip(new, pairs, reply.texts, reply.truncated, strict=True):
                if outs is None:
                    continue
                scores = [
                    score
                    for _, score in self._grade(outs, cut or [False] * len(outs), gold, parse_choices(q))
                ]
                scored[key] = sum(scores) / len(scores)
            self.blind.update(scored)
            if self.blind_cache is not None and scored:
                self.blind_cache.parent.mkdir(parents=True, exist_ok=True)
                with self.blind_cache.open("a") as f:
                    f.writelines(json.dumps({"key": k, "accuracy": a}) + "\n" for k, a in scored.items())
        return [self.blind.get(k, 0.0) for k in keys]

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

    def _audit(self, records: list[dict], step: int | None, images: list | None = None) -> None:
        """Append this call's share of the step's audit records (flushed per call: a crash loses at
        most the batch being scored). A record names its prompt's first image, saved once as a
        thumbnail under ``audit/images/`` (:func:`racro_trl.reporting.viewer.save_thumbnail`), for the viewer."""
        if self.audit_dir is None or self.audit_captions == 0:
            return
        from accelerate import PartialState

        if self.audit_path is None:
            self.audit_dir.mkdir(parents=True, exist_ok=True)
            self.audit_path = self.audit_dir / f"{self.__name__}-rank{_process_index()}.jsonl"
        if self._audited["step"] != step:
            self._audited = {"step": step, "kept": 0, "flagged": 0}
        share = -(-self.audit_captions // PartialState().num_processes) if self.audit_captions > 0 else None
        kept = []
        for i, record in enumerate(records):
            if share is None or self._audited["kept"] < share:
                self._audited["kept"] += 1
            elif (record["leak"] or record["failed"]) and self._audited["flagged"] < share:
                self._audited["flagged"] += 1
            else:
                continue
            image = images[i] if images else None
            if image and not isinstance(image, str) and hasattr(image[0], "tobytes"):
                from ..reporting.viewer import save_thumbnail

                record = {**record, "image": save_thumbnail(image[0], self.audit_dir)}
            kept.append({"step": step, "call": self.calls, "rank": _process_index(), "index": i, **record})
        if kept:
            with self.audit_path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)

    def close(self) -> None:
        self._collect(None, None)
        if self._sender is not None:
            self._sender.shutdown()
            self._sender = None
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
        Path(output_dir) / f"blind_accuracy-rank{_process_index()}.jsonl" if (gain and output_dir) else None
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

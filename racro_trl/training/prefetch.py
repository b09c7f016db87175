"""Reasoner requests sent ahead: the overlap contract between ``CROTrainer`` and a reward.

Right after sampling, the trainer hands the decoded captions to every reward that :class:`SendsAhead`;
such a reward starts its reasoner requests in a background thread (:class:`Prefetch`) while the policy
computes its log-probs, and its reward call for the same captions only collects the answers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)


@runtime_checkable
class SendsAhead(Protocol):
    """A reward whose requests can start before its call. ``overlap``: whether the trainer should send."""

    overlap: bool

    def send(self, completions: list, question: list[str], trainer_state=None) -> None: ...


@dataclass
class Sent:
    """One batch in flight: the captions and questions it was sent for, its settings, its answers."""

    captions: list[str]
    question: list[str]
    settings: Any
    answers: Future


class Prefetch:
    """At most one batch of requests in flight, in one background thread named after ``name``."""

    def __init__(self, name: str):
        self.name = name
        self._sent: Sent | None = None
        self._pool: ThreadPoolExecutor | None = None

    def start(self, captions: list[str], question: list[str], settings, ask: Callable) -> None:
        """Run ``ask(captions, question, settings)`` in the background (a batch still in flight is
        awaited and dropped first)."""
        self.collect(None, None)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-requests")
        self._sent = Sent(captions, question, settings, self._pool.submit(ask, captions, question, settings))

    def collect(self, captions: list[str] | None, question: list[str] | None) -> tuple:
        """(settings, answers) sent for exactly these captions and questions, else (None, None); a batch
        sent for others is awaited and dropped (with a warning when a batch was asked for)."""
        sent, self._sent = self._sent, None
        if sent is None:
            return None, None
        if (sent.captions, sent.question) == (captions, question):
            return sent.settings, sent.answers.result()
        if captions is not None:
            logger.warning("%s: the reward call's captions are not those sent ahead; asking anew", self.name)
        with contextlib.suppress(Exception):
            sent.answers.result()
        return None, None

    def close(self) -> None:
        self.collect(None, None)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

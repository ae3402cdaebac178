"""Per-process state of one scorer, and the sender its output goes through (no handler code: no cycle)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import threadpoolctl

from infra.consumer import ConsumerRuntime
from infra.kafka import topic_name
from infra.tracing import Headers
from models.drift import DriftMonitor
from models.shadow import ShadowComparison
from schemas import topics
from scorer.settings import ScorerSettings

if TYPE_CHECKING:
    from models.engine import InferenceEngine


class KeyedSender(Protocol):
    """Sends (key, value) messages to a topic without waiting; returns what to await for the acks."""

    async def send(
        self, topic: str, messages: Sequence[tuple[bytes | None, bytes]],
        headers: Sequence[Headers | None] | None = None,
    ) -> list[tuple[Any, list[int]]]:
        """Queue every message (with its headers, if given); (ack to await, indices it covers) pairs."""
        ...


Route = Callable[[str, int], Awaitable[KeyedSender]]
"""Exactly-once: the sender of one input partition (topic, partition), inside its open transaction."""


def single_threaded_math() -> None:
    """Limit BLAS/OpenMP pools to one thread in the calling (inference) thread.

    Measured on this 2-core box under load: engine.score on 500 rows took ~70 ms with the default
    2-thread pools (oversubscribed, spinning) and ~10-12 ms single-threaded.
    """
    threadpoolctl.threadpool_limits(1)


def inference_executor() -> ThreadPoolExecutor:
    """One dedicated thread for engine calls: the event loop keeps fetching and publishing meanwhile."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference", initializer=single_threaded_math)


@dataclass(kw_only=True)
class ScorerRuntime(ConsumerRuntime):
    """Per-process state of one scorer: the engine arrives in the startup hook, never at import."""

    settings: ScorerSettings
    engine: InferenceEngine | None = None
    executor: ThreadPoolExecutor | None = None
    sender: KeyedSender | None = None  # set at start-up, from what the broker is (scorer/app.py)
    route: Route | None = None  # exactly-once: output goes to the transaction of its input partition
    shadow: ShadowComparison = field(default_factory=ShadowComparison)  # scorer/shadow.py
    drift: DriftMonitor = field(default_factory=DriftMonitor)  # scorer/drift.py

    @property
    def predictions_topic(self) -> str:
        """Concrete predictions topic."""
        return topic_name(self.settings, topics.PREDICTIONS)

    @property
    def dead_letter_topic(self) -> str:
        """Concrete dead-letter topic."""
        return topic_name(self.settings, topics.DEAD_LETTER)

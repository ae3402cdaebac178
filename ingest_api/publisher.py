"""Publishing to Kafka: feature events with every ack awaited, and fire-and-log sync predictions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from infra.tracing import outgoing_headers

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from infra.kafka import TopicGuard

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The broker did not acknowledge every record."""


class AckedPublisher:
    """Sends records one by one without waiting, then awaits every broker acknowledgement at once."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, guard: TopicGuard | None = None) -> None:
        self._producer = producer
        self._topic = topic
        self._guard = guard
        self._pending: list[asyncio.Future[Any]] = []
        self.sent = 0
        self._headers = outgoing_headers()  # the request's trace context, on every record (None: untraced)

    def _check_topic(self) -> None:
        """Refuse to send into a topic the broker lost: the record would never reach the scorer."""
        if self._guard is not None and not self._guard.ok(self._topic):
            problem = self._guard.problems.get(self._topic, "is unavailable")
            raise PublishError(f"topic {self._topic} {problem}")

    async def send(self, key: bytes, value: bytes) -> None:
        """Queue one record (waits only when the producer's buffer is full)."""
        if not self._pending:
            self._check_topic()
        self._pending.append(
            await self._producer.send(self._topic, value=value, key=key, headers=self._headers)
        )
        self.sent += 1

    async def send_many(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Queue several records."""
        self._check_topic()
        send = self._producer.send
        topic = self._topic
        pending = self._pending
        headers = self._headers
        for key, value in records:
            pending.append(await send(topic, value=value, key=key, headers=headers))
            self.sent += 1

    async def wait_acked(self) -> int:
        """Wait for all queued records; raise PublishError naming the first failure."""
        pending, self._pending = self._pending, []
        failures: list[BaseException] = []
        # One by one, not gather(): most futures are already done by now, and gather() over 20k
        # futures spent ~35 µs per future registering callbacks (measured with bench/bench_batch.py).
        for future in pending:
            try:
                await future
            except Exception as error:
                failures.append(error)
        if failures:
            raise PublishError(
                f"{len(failures)} of {len(pending)} record(s) were not acknowledged by the broker: "
                f"{failures[0]!r}"
            )
        return len(pending)

    def abandon(self) -> None:
        """Forget queued records (they may still be delivered) after an error elsewhere."""
        for future in self._pending:
            future.add_done_callback(_consume_exception)
        self._pending = []


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("abandoned record failed", extra={"error": repr(future.exception())})


class BackgroundPublisher:
    """Publishes without making the caller wait for the ack; failures are logged, in-flight is bounded."""

    def __init__(
        self, producer: AIOKafkaProducer, limit: int = 10_000, on_failure: Callable[[], None] | None = None
    ) -> None:
        self._producer = producer
        self._limit = limit
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0
        self.drain_s = 10.0

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Start publishing one record; waits only while `limit` records are already in flight."""
        while len(self._tasks) >= self._limit:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self._send(topic, key, value, outgoing_headers()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> None:
        try:
            await (await self._producer.send(topic, value=value, key=key, headers=headers))
        except Exception as error:
            self.failures += 1
            if self._on_failure is not None:
                self._on_failure()
            log.error("background publish failed", extra={"topic": topic, "key": key.decode(errors="replace"),
                                                          "error": repr(error)})

    @property
    def in_flight(self) -> int:
        """Records started but not yet acknowledged."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait (at most `drain_s`) for in-flight records before the producer stops."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.drain_s)

"""The micro-batch boundary: score a consumed batch once, queue every result, commit once all are acked."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import threadpoolctl
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from infra.consumer import ConsumerRuntime, Publish
from infra.delivery import Backoff, Outgoing, Pending, enqueue, publish_isolated
from infra.kafka import topic_name
from infra.logging import dead_letter_fields
from infra.pipeline import Finish
from models.drift import DriftMonitor
from models.shadow import ShadowComparison
from schemas import topics
from schemas.messages import DeadLetter
from schemas.wire import dead_letter
from scorer import drift, metrics, shadow
from scorer.partitioning import by_origin, partitions_for_keys
from scorer.reasons import with_reasons
from scorer.scoring import Scored, SourceRecord, assemble, decode_records, rows_of, score_matrix
from scorer.settings import ScorerSettings

if TYPE_CHECKING:
    from models.engine import InferenceEngine, ScoreBatch

log = logging.getLogger(__name__)

class KeyedSender(Protocol):
    """Sends (key, value) messages to a topic without waiting; returns what to await for the acks."""

    async def send(
        self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]
    ) -> list[tuple[Any, list[int]]]:
        """Queue every message; (ack to await, indices of the messages it covers) pairs."""
        ...


Route = Callable[[str, int], Awaitable[KeyedSender]]
"""Exactly-once: the sender of one input partition (topic, partition), inside its open transaction."""


def failed(error: BaseException) -> asyncio.Future[Any]:
    """An already failed ack (a message the producer refused before sending it)."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


@dataclass(frozen=True)
class ProducerSender:
    """Straight through aiokafka, one record batch per partition: ~2 µs a message against ~28 µs via
    KafkaBroker.publish (per-message command objects, middlewares, headers)."""

    producer: AIOKafkaProducer

    async def send(
        self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]
    ) -> list[tuple[Any, list[int]]]:
        """Per-partition record batches, in message order per partition; unkeyed ones sent one by one."""
        keyed = [(i, key, value) for i, (key, value) in enumerate(messages) if key is not None]
        pending = await send_keyed_batches(self.producer, topic, keyed)
        for i, (key, value) in enumerate(messages):
            if key is None:
                try:
                    pending.append((await self.producer.send(topic, value), [i]))
                except Exception as error:
                    pending.append((failed(error), [i]))
        return pending


@dataclass(frozen=True)
class BrokerSender:
    """Through FastStream's broker.publish (before start-up completes, and under TestKafkaBroker)."""

    publish: Publish

    async def send(
        self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]
    ) -> list[tuple[Any, list[int]]]:
        """One publish per message."""
        pending: list[tuple[Any, list[int]]] = []
        for i, (key, value) in enumerate(messages):
            try:
                pending.append((await self.publish(value, topic, key=key, no_confirm=True), [i]))
            except Exception as error:
                pending.append((failed(error), [i]))
        return pending


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
    sender: KeyedSender | None = None  # set by build_app: the broker's publish, then the aiokafka producer
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


async def send_keyed_batches(
    producer: AIOKafkaProducer, topic: str, messages: Sequence[tuple[int, bytes, bytes]]
) -> list[tuple[Any, list[int]]]:
    """Append (index, key, value) messages to per-partition record batches and send them.

    Partitions are the ones producer.send would pick for each key (murmur2), in message order per
    partition; measured ~2 µs a message against ~12 µs for one producer.send each. Returns one
    (ack, indices) pair per batch; a message too large for any batch gets a failed ack of its own.
    """
    if not messages:
        return []
    partitions = await producer.partitions_for(topic)
    chosen = partitions_for_keys([key for _, key, _ in messages], sorted(partitions))
    by_partition: dict[int, list[tuple[int, bytes, bytes]]] = {}
    for partition, message in zip(chosen, messages, strict=True):
        by_partition.setdefault(partition, []).append(message)
    pending: list[tuple[Any, list[int]]] = []
    limit = producer._max_request_size  # what producer.send enforces per message
    for partition, items in by_partition.items():
        batch, indices = producer.create_batch(), list[int]()
        for index, key, value in items:
            if len(value) + len(key) > limit:
                error = MessageSizeTooLargeError(f"{len(value)}-byte message exceeds max_request_size")
                pending.append((failed(error), [index]))
                continue
            if batch.append(key=key, value=value, timestamp=None) is None:
                if indices:
                    pending.append((await producer.send_batch(batch, topic, partition=partition), indices))
                batch, indices = producer.create_batch(), []
                if batch.append(key=key, value=value, timestamp=None) is None:
                    error = ValueError(f"message of {len(value)} bytes exceeds the producer's max_batch_size")
                    pending.append((failed(error), [index]))
                    continue
            indices.append(index)
        if indices:
            pending.append((await producer.send_batch(batch, topic, partition=partition), indices))
    return pending


def publish_backoff(settings: ScorerSettings) -> Backoff:
    """Retry delays for a transient broker failure while publishing a batch's output."""
    return Backoff(settings.retry_initial_seconds, settings.retry_max_seconds, settings.retry_window_seconds)


def letter_message(runtime: ScorerRuntime, key: bytes | None, letter: DeadLetter) -> Outgoing:
    """A dead letter as an outgoing message."""
    return Outgoing(runtime.dead_letter_topic, key, letter.model_dump_json().encode(), letter)


async def publish_scored(
    runtime: ScorerRuntime, scored: Scored, origins: Sequence[SourceRecord | None]
) -> Finish:
    """Queue every prediction and dead letter now, in record order; returns what waits for their acks."""
    sender = runtime.sender
    if sender is None:
        raise RuntimeError("scorer has no sender yet")
    outgoing = [
        Outgoing(runtime.predictions_topic, key, value, origin)
        for (key, value), origin in zip(scored.predictions, origins, strict=True)
    ]
    outgoing += [letter_message(runtime, key, letter) for key, letter in scored.dead_letters]
    if runtime.route is not None:
        return await publish_routed(runtime, runtime.route, scored, outgoing)
    queued = await enqueue(sender.send, outgoing)

    async def acknowledged() -> None:
        await settle_scored(runtime, sender, scored, outgoing, queued)

    return acknowledged


async def publish_routed(
    runtime: ScorerRuntime, route: Route, scored: Scored, outgoing: list[Outgoing]
) -> Finish:
    """Exactly-once: queue each input partition's output in its own transaction."""
    routed: list[tuple[KeyedSender, list[Outgoing], Pending]] = []
    for (topic, partition), group in by_origin(outgoing, lambda message: message.origin).items():
        sender = await route(topic, partition)
        routed.append((sender, group, await enqueue(sender.send, group)))

    async def acknowledged() -> None:
        for sender, group, queued in routed:
            await settle_scored(runtime, sender, scored, group, queued)

    return acknowledged


async def settle_scored(
    runtime: ScorerRuntime, sender: KeyedSender, scored: Scored, outgoing: list[Outgoing], queued: Pending
) -> None:
    """Wait until the broker has every message, each sent at most once per attempt.

    A prediction the broker rejects for its own sake is dead-lettered (stage `publish`, with the reason);
    a transient failure is retried with backoff and then raised, so the batch is rewound.
    """
    backoff = publish_backoff(runtime.settings)
    rejected = await publish_isolated(sender.send, outgoing, backoff, queued=queued)
    retry: list[Outgoing] = []
    for message, error in rejected:
        reason = f"the broker rejected the output: {type(error).__name__}: {error}"
        if isinstance(message.origin, DeadLetter):  # already bounded: drop the payload, keep the letter
            letter = message.origin.model_copy(update={"payload": "", "payload_truncated": True})
        elif message.origin is None:
            raise error
        else:
            letter = dead_letter(message.origin, "publish", reason)
            scored.predictions.remove((message.key, message.value))  # type: ignore[arg-type]
        scored.dead_letters.append((message.key, letter))
        retry.append(letter_message(runtime, message.key, letter))
    if retry and (still := await publish_isolated(sender.send, retry, backoff)):
        raise still[0][1]


async def score_batch(runtime: ScorerRuntime, records: Sequence[SourceRecord]) -> Finish:
    """Decode, score and queue the output of one micro-batch; returns what finishes it once all is acked."""
    engine = runtime.engine
    if engine is None:
        raise RuntimeError("scorer engine is not loaded yet")
    count = len(records)
    metrics.EVENTS_IN.inc(count)
    metrics.BATCH_SIZE.observe(count)
    runtime.stats.events_in += count

    valid, matrix, dead = decode_records(records)
    drift.observe(runtime, matrix)  # drift hook: bin counts of the decoded rows (~µs per batch)
    result: ScoreBatch | list[Any] = []
    elapsed = 0.0
    if valid:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(runtime.executor, score_matrix, engine, matrix)
        if runtime.settings.reasons:  # reasons hook (STREAMSCORE_REASONS): per-row records carry them
            result = await loop.run_in_executor(
                runtime.executor, with_reasons, engine, matrix, rows_of(result)
            )
        elapsed = time.perf_counter() - started
        metrics.INFERENCE_SECONDS.observe(elapsed)
        runtime.stats.latency.record(elapsed * 1000.0)
    scored = assemble(valid, result, matrix if runtime.settings.feature_log else None)
    origins: list[SourceRecord | None] = list(scored.origins)
    scored.dead_letters[:0] = dead
    acknowledged = await publish_scored(runtime, scored, origins)

    async def finish() -> None:
        await acknowledged()
        # Shadow hook: runs once the active results are on the broker; it never raises.
        await shadow.shadow_batch(runtime, valid, matrix, result, elapsed * 1000.0)
        for _, letter in scored.dead_letters:
            metrics.DEAD_LETTERS.labels(letter.stage).inc()
            log.warning("record dead-lettered", extra=dead_letter_fields(letter))
        metrics.EVENTS_OUT.inc(len(scored.predictions))
        runtime.stats.events_out += len(scored.predictions)
        runtime.stats.dlq += len(scored.dead_letters)
        runtime.stats.batches += 1
        log.debug("micro-batch scored", extra={"records": count, "dead": len(scored.dead_letters)})

    return finish

"""The sink's batch boundaries: validate, write Postgres (+ Redis) in one transaction, commit, then ack."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.consumer import ConsumerRuntime, Publish
from infra.kafka import topic_name
from infra.logging import dead_letter_fields
from schemas import topics
from schemas.messages import DeadLetter
from schemas.wire import SourceRecord, dead_letter, validation_reason
from sink import metrics
from sink.parsing import parse_predictions
from sink.settings import SinkSettings
from store.batch_jobs import add_batch_progress
from store.cache import cache_predictions
from store.predictions import PredictionRow, StoredPredictions, store_dead_letters, store_predictions
from store.shadow import store_shadow_predictions

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_DB_ERRORS = (SQLAlchemyError, OSError, TimeoutError)
"""Postgres unreachable, restarting or timing out; anything else is a bug and surfaces."""


@dataclass(kw_only=True)
class SinkRuntime(ConsumerRuntime):
    """Per-process clients of one sink, created in the startup hook and closed on shutdown."""

    settings: SinkSettings
    sessionmaker: async_sessionmaker[AsyncSession] | None = None
    redis: Redis | None = None

    @property
    def dead_letter_topic(self) -> str:
        """Concrete dead-letter topic."""
        return topic_name(self.settings, topics.DEAD_LETTER)


async def in_transaction_with_retry(runtime: SinkRuntime, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one transaction and commit; on a Postgres failure retry with capped doubling delays.

    After retry_window_seconds the error propagates: the subscriber then rewinds the batch (nothing
    committed) and polls it again, so the consumer stays in its group instead of crash-looping.
    """
    if runtime.sessionmaker is None:
        raise RuntimeError("sink database is not connected yet")
    settings = runtime.settings
    delay = settings.retry_initial_seconds
    deadline = time.monotonic() + settings.retry_window_seconds
    attempt = 1
    while True:
        try:
            async with runtime.sessionmaker() as session, session.begin():
                return await work(session)
        except RETRYABLE_DB_ERRORS as error:
            metrics.DB_FAILURES.inc()
            give_up = time.monotonic() + delay > deadline
            log.warning(
                "postgres write failed",
                extra={
                    "attempt": attempt,
                    "retry_in_s": None if give_up else delay,
                    "error": f"{type(error).__name__}: {error}"[:500],
                },
            )
            if give_up:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.retry_max_seconds)
            attempt += 1


def first_occurrences(
    valid: Sequence[tuple[SourceRecord, PredictionRow]], inserted: set[str]
) -> list[tuple[SourceRecord, PredictionRow]]:
    """Newly inserted predictions, each once: a batch can carry a redelivered copy after a later row."""
    seen: set[str] = set()
    fresh = []
    for item in valid:
        event_id = item[1].event_id
        if event_id in inserted and event_id not in seen:
            seen.add(event_id)
            fresh.append(item)
    return fresh


async def publish_dead_letters(
    runtime: SinkRuntime, publish: Publish, letters: Sequence[tuple[bytes | None, DeadLetter]]
) -> None:
    """Send dead letters and wait until the broker has them all (raises otherwise)."""
    pending = [
        await publish(letter.model_dump_json().encode(), runtime.dead_letter_topic, key=key, no_confirm=True)
        for key, letter in letters
    ]
    futures = [item for item in pending if isinstance(item, asyncio.Future)]
    if futures:
        await asyncio.gather(*futures)
    for _, letter in letters:
        log.warning("prediction dead-lettered", extra=dead_letter_fields(letter))


def parse_dead_letters(records: Sequence[SourceRecord]) -> list[DeadLetter]:
    """Dead letters as received; an unreadable one is kept as a record about itself, never dropped."""
    letters: list[DeadLetter] = []
    for record in records:
        try:
            letters.append(DeadLetter.model_validate_json(record.value or b""))
        except ValidationError as error:
            reason = f"unreadable dead letter: {validation_reason(error)}"
            letters.append(dead_letter(record, "decode", reason))
    return letters


def shadow_rows(records: Sequence[SourceRecord]) -> list[PredictionRow]:
    """Shadow predictions to store; an invalid one is logged and dropped (a shadow never dead-letters)."""
    valid, invalid = parse_predictions(records)
    for _, letter in invalid:
        log.warning("invalid shadow prediction dropped", extra=dead_letter_fields(letter))
    return [row for _, row in valid]


@dataclass
class Written:
    """What one committed transaction changed."""

    predictions: StoredPredictions
    dead_letters: int


async def store_batch(runtime: SinkRuntime, publish: Publish, records: Sequence[SourceRecord]) -> None:
    """Store one polled batch (predictions and dead letters); returns only after Postgres committed it.

    Invalid predictions are first dead-lettered (and acknowledged by the broker); then ONE transaction
    inserts predictions and dead letters, moves batch jobs forward, and fills Redis before committing.
    """
    dead_topic = runtime.dead_letter_topic
    # Shadow hook: predictions-shadow.v1 records go only to predictions_shadow (see shadow_rows).
    shadow_topic = topic_name(runtime.settings, topics.PREDICTIONS_SHADOW)
    shadow = shadow_rows([r for r in records if r.topic == shadow_topic])
    records = [r for r in records if r.topic != shadow_topic]
    prediction_records = [r for r in records if r.topic != dead_topic]
    dead_records = [r for r in records if r.topic == dead_topic]
    metrics.ROWS_IN.labels(topics.PREDICTIONS).inc(len(prediction_records))
    metrics.ROWS_IN.labels(topics.DEAD_LETTER).inc(len(dead_records))
    runtime.stats.events_in += len(prediction_records)

    valid, invalid = parse_predictions(prediction_records)
    if invalid:
        metrics.INVALID.inc(len(invalid))
        await publish_dead_letters(runtime, publish, invalid)
    letters = parse_dead_letters(dead_records)
    predictions = [row for _, row in valid]

    async def write(session: AsyncSession) -> Written:
        stored = await store_predictions(session, predictions)
        dead_count, dead_per_batch = await store_dead_letters(session, letters)
        await add_batch_progress(session, scored=stored.per_batch, dead=dead_per_batch)
        # Before the commit, so a 'completed' job implies both stores hold its rows.
        entries = [
            (row.customer_id, row.model_version, record.value or b"")
            for record, row in first_occurrences(valid, stored.inserted)
        ]
        if runtime.redis is not None and not await cache_predictions(
            runtime.redis, entries, runtime.settings.redis_ttl_seconds
        ):
            metrics.CACHE_FAILURES.inc()
        await store_shadow_predictions(session, shadow)
        return Written(stored, dead_count)

    started = time.perf_counter()
    written = await in_transaction_with_retry(runtime, write)
    elapsed = time.perf_counter() - started
    metrics.WRITE_SECONDS.observe(elapsed)
    runtime.stats.latency.record(elapsed * 1000.0)
    inserted = len(written.predictions.inserted)
    metrics.ROWS_STORED.labels("predictions").inc(inserted)
    metrics.ROWS_STORED.labels("dead_letters").inc(written.dead_letters)
    metrics.DUPLICATES.inc(len(predictions) - inserted)
    runtime.stats.events_out += inserted
    runtime.stats.dlq += written.dead_letters
    runtime.stats.batches += 1
    for letter in letters:
        log.info(
            "dead letter received",
            extra={
                "stage": letter.stage,
                "reason": letter.reason,
                "event_id": str(letter.event_id) if letter.event_id else None,
                "customer_id": letter.customer_id,
                "batch_id": str(letter.batch_id) if letter.batch_id else None,
            },
        )
    log.debug("batch stored", extra={"records": len(records), "new_predictions": inserted})

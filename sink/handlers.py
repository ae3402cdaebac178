"""The sink's batch boundaries: validate, write Postgres in one transaction, then Redis, then commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.batch_trace import CURRENT_BATCH, BatchTrace, logged, stage
from infra.consumer import ConsumerRuntime, Publish
from infra.delivery import isolate_failing
from infra.kafka import topic_name
from infra.logging import dead_letter_fields
from infra.pipeline import Finish
from infra.rounds import sleep_or_stop
from schemas import topics
from schemas.feature_log import unlogged
from schemas.messages import DeadLetter
from schemas.wire import KeyedLetter, SourceRecord, dead_letter, validation_reason
from sink import metrics
from sink.outcomes import parse_outcomes, write_outcomes
from sink.parsing import parse_predictions
from sink.settings import SinkSettings
from store.batch_jobs import add_batch_progress
from store.cache import CacheEntry, cache_predictions
from store.cache_repair import clear_repairs, note_cache_misses, pending_repairs
from store.predictions import PredictionRow, StoredPredictions, store_dead_letters, store_predictions
from store.shadow import store_shadow_predictions

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_DB_ERRORS = (SQLAlchemyError, OSError, TimeoutError)
"""Postgres unreachable, restarting or timing out; rows it rejects (DataError) are isolated instead."""


@dataclass(kw_only=True)
class SinkRuntime(ConsumerRuntime):
    """Per-process clients of one sink, created in the startup hook and closed on shutdown."""

    settings: SinkSettings
    sessionmaker: async_sessionmaker[AsyncSession] | None = None
    redis: Redis | None = None
    redis_paused_until: float = 0.0

    def redis_paused(self) -> bool:
        """True for redis_pause_seconds after a failed Redis call: writes go straight to cache_repair."""
        return time.monotonic() < self.redis_paused_until

    def pause_redis(self) -> None:
        """Stop calling Redis for a while (a hung Redis must not cost every batch a timeout)."""
        self.redis_paused_until = time.monotonic() + self.settings.redis_pause_seconds

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
            if is_rejected_row(error):
                raise
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


def parse_dead_letters(records: Sequence[SourceRecord]) -> list[KeyedLetter]:
    """Dead letters as received, with their record's key (the original key); an unreadable one is kept as
    a record about itself, never dropped."""
    letters: list[KeyedLetter] = []
    for record in records:
        try:
            letters.append(KeyedLetter(record.key, DeadLetter.model_validate_json(record.value or b"")))
        except ValidationError as error:
            reason = f"unreadable dead letter: {validation_reason(error)}"
            letters.append(KeyedLetter(record.key, dead_letter(record, "decode", reason)))
    return letters


def shadow_rows(records: Sequence[SourceRecord]) -> list[PredictionRow]:
    """Shadow predictions to store; an invalid one is logged and dropped (a shadow never dead-letters)."""
    valid, invalid = parse_predictions(records)
    for _, letter in invalid:
        log.warning("invalid shadow prediction dropped", extra=dead_letter_fields(letter))
    return [row for _, row in valid]


@dataclass
class Written:
    """What the committed transactions of one batch changed."""

    predictions: StoredPredictions = field(default_factory=StoredPredictions)
    dead_letters: int = 0
    cache: list[CacheEntry] = field(default_factory=list)


PredictionItem = tuple[SourceRecord, PredictionRow]
Item = PredictionItem | KeyedLetter


def with_trace_ids(batch: BatchTrace, items: list[PredictionItem]) -> list[PredictionItem]:
    """Each row with the trace id of its record's sampled traceparent (the dashboard links it); only while
    the sink traces, so an untraced sink does no work per row for it."""
    if not (trace_ids := batch.trace_ids):
        return items
    return [(item[0], item[1]._replace(trace_id=trace_id)) if (trace_id := trace_ids.get(id(item[0]))) else
            item for item in items]  # an untouched row keeps its tuple: no new one per row


def is_rejected_row(error: BaseException) -> bool:
    """Postgres refused the data itself (retrying cannot help), not the connection."""
    return isinstance(error, (DataError, IntegrityError))


def latest_entries(items: Sequence[PredictionItem], stored: StoredPredictions) -> list[CacheEntry]:
    """The newly stored prediction with the greatest cache version per Redis key (LATEST_ORDER)."""
    best: dict[tuple[str, str], CacheEntry] = {}
    for record, row in items:
        version = stored.versions.get(row.event_id)
        if version is None:
            continue
        key = (row.customer_id, row.model_version)
        current = best.get(key)
        if current is None or current[3] < version:
            best[key] = (row.customer_id, row.model_version, unlogged(record.value or b""), version)
    return list(best.values())


async def write_items(runtime: SinkRuntime, items: Sequence[Item], written: Written) -> None:
    """One transaction for these items; on commit adds what it changed to `written`."""
    predictions = [item for item in items if not isinstance(item, KeyedLetter)]
    letters = [item for item in items if isinstance(item, KeyedLetter)]
    paused = runtime.redis_paused()

    async def work(session: AsyncSession) -> tuple[StoredPredictions, int, list[CacheEntry]]:
        stored = await store_predictions(session, [row for _, row in predictions])
        dead_count, dead_per_batch = await store_dead_letters(session, letters)
        await add_batch_progress(session, scored=stored.per_batch, dead=dead_per_batch)
        entries = latest_entries(predictions, stored)
        # Durable record of what Redis will miss: keys of redelivered rows (their first write may have been
        # lost with a crashed sink) and, while Redis is paused, every key.
        missed = {(row.customer_id, row.model_version) for _, row in predictions if row.event_id not in
                  stored.inserted}
        if paused:
            missed.update((e[0], e[1]) for e in entries)
        await note_cache_misses(session, sorted(missed))
        return stored, dead_count, [] if paused else entries

    stored, dead_count, entries = await in_transaction_with_retry(runtime, work)
    written.predictions.inserted |= stored.inserted
    written.predictions.per_batch.update(stored.per_batch)
    written.dead_letters += dead_count
    written.cache += entries


async def store_isolated(runtime: SinkRuntime, publish: Publish, items: Sequence[Item]) -> Written:
    """Write all items; rows Postgres rejects are isolated in halves and dead-lettered, the rest committed."""
    written = Written()
    rejected = await isolate_failing(items, lambda part: write_items(runtime, part, written), is_rejected_row)
    letters: list[tuple[bytes | None, DeadLetter]] = []
    for item, error in rejected:
        reason = f"postgres rejected the row: {type(error).__name__}: {str(error)[:300]}"
        if isinstance(item, KeyedLetter):
            log.error("dead letter not storable", extra={**dead_letter_fields(item.letter), "error": reason})
            continue
        record, _ = item
        letters.append((record.key, dead_letter(record, "validation", reason)))
    if letters:
        metrics.INVALID.inc(len(letters))
        await publish_dead_letters(runtime, publish, letters)
    return written


async def refresh_cache(runtime: SinkRuntime, entries: Sequence[CacheEntry]) -> None:
    """After the commit: write the batch's latest rows to Redis; on failure note the keys for repair."""
    if not entries or runtime.redis is None:
        return
    timeout = runtime.settings.redis_timeout_seconds
    try:
        ok = await asyncio.wait_for(
            cache_predictions(runtime.redis, entries, runtime.settings.redis_ttl_seconds), timeout
        )
    except TimeoutError:
        ok = False
    if ok:
        return
    metrics.CACHE_FAILURES.inc()
    runtime.pause_redis()
    keys = sorted({(e[0], e[1]) for e in entries})

    async def note(session: AsyncSession) -> None:
        await note_cache_misses(session, keys)

    await in_transaction_with_retry(runtime, note)


async def repair_cache_once(runtime: SinkRuntime, limit: int = 5000) -> int:
    """Rewrite noted keys from Postgres's latest rows; the number of notes cleared."""
    if runtime.sessionmaker is None or runtime.redis is None or runtime.redis_paused():
        return 0
    async with runtime.sessionmaker() as session:
        repairs = await pending_repairs(session, limit)
    if not repairs.notes:
        return 0
    timeout = max(runtime.settings.redis_timeout_seconds, 1.0)
    try:
        ok = await asyncio.wait_for(
            cache_predictions(runtime.redis, repairs.entries, runtime.settings.redis_ttl_seconds), timeout
        )
    except TimeoutError:
        ok = False
    if not ok:
        runtime.pause_redis()
        return 0
    async with runtime.sessionmaker() as session, session.begin():
        await clear_repairs(session, repairs.notes)
    log.info("cache repaired from postgres", extra={"keys": len(repairs.notes)})
    return len(repairs.notes)


async def repair_cache_forever(runtime: SinkRuntime) -> None:
    """Background task: repair the cache from the noted keys every cache_repair_interval_seconds."""
    while True:
        try:
            while await repair_cache_once(runtime) > 0:
                pass
        except Exception as error:  # Postgres down: the next round tries again
            log.warning("cache repair failed", extra={"error": repr(error)[:300]})
        await sleep_or_stop(runtime.settings.cache_repair_interval_seconds)


async def store_batch(runtime: SinkRuntime, publish: Publish, records: Sequence[SourceRecord]) -> Finish:
    """Parse one polled batch now; the returned stages store it (its offsets commit after both).

    Invalid predictions are dead-lettered at once (and acknowledged by the broker). The first stage runs
    one transaction that inserts predictions and dead letters and moves batch jobs forward; the second
    writes Redis after that commit (never holding the transaction open); keys Redis misses are noted in
    Postgres and repaired later. Each stage runs one batch at a time in batch order (infra/pipeline.py).
    """
    dead_topic = runtime.dead_letter_topic
    # Shadow hook: predictions-shadow.v1 records go only to predictions_shadow (see shadow_rows).
    shadow_topic = topic_name(runtime.settings, topics.PREDICTIONS_SHADOW)
    shadow = shadow_rows([r for r in records if r.topic == shadow_topic])
    records = [r for r in records if r.topic != shadow_topic]
    outcomes_topic = topic_name(runtime.settings, topics.OUTCOMES)  # outcomes hook: sink/outcomes.py
    outcomes, bad_outcomes = parse_outcomes([r for r in records if r.topic == outcomes_topic])
    records = [r for r in records if r.topic != outcomes_topic]
    prediction_records = [r for r in records if r.topic != dead_topic]
    dead_records = [r for r in records if r.topic == dead_topic]
    metrics.ROWS_IN.labels(topics.PREDICTIONS).inc(len(prediction_records))
    metrics.ROWS_IN.labels(topics.DEAD_LETTER).inc(len(dead_records))
    runtime.stats.events_in += len(prediction_records)

    batch = CURRENT_BATCH.get()  # None unless tracing is on (infra/tracing.py)
    with stage(batch, "parse"):
        valid, invalid = parse_predictions(prediction_records)
        if batch is not None:
            valid = with_trace_ids(batch, valid)
        letters = parse_dead_letters(dead_records)
    if invalid or bad_outcomes:
        metrics.INVALID.inc(len(invalid) + len(bad_outcomes))
        await publish_dead_letters(runtime, publish, [*invalid, *bad_outcomes])

    async def store_shadow(session: AsyncSession) -> None:
        await store_shadow_predictions(session, shadow)

    async def store_outcome_rows(session: AsyncSession) -> int:
        return await write_outcomes(session, outcomes)

    async def finish() -> Finish:
        with logged(batch):
            with stage(batch, "postgres transaction"):
                if outcomes:  # own idempotent transaction (ON CONFLICT outcome_id): touches nothing else
                    new = await in_transaction_with_retry(runtime, store_outcome_rows)
                    metrics.ROWS_STORED.labels("outcomes").inc(new)
                # Shadow rows in their own (idempotent) transaction: never customers, segments or Redis.
                if shadow:
                    await in_transaction_with_retry(runtime, store_shadow)
                started = time.perf_counter()
                written = await store_isolated(runtime, publish, [*valid, *letters])
                elapsed = time.perf_counter() - started
            metrics.WRITE_SECONDS.observe(elapsed)
            runtime.stats.latency.record(elapsed * 1000.0)
            inserted = len(written.predictions.inserted)
            metrics.ROWS_STORED.labels("predictions").inc(inserted)
            metrics.ROWS_STORED.labels("dead_letters").inc(written.dead_letters)
            metrics.DUPLICATES.inc(len(valid) - inserted)
            runtime.stats.events_out += inserted
            runtime.stats.dlq += written.dead_letters
            runtime.stats.batches += 1
            for _, letter in letters:
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

            async def cache() -> None:  # the next stage: overlaps the next batch's Postgres write
                with stage(batch, "redis write"):
                    await refresh_cache(runtime, written.cache)

            return cache

    return finish

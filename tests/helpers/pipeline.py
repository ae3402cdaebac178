"""Scorer and sink helpers: events, predictions, settings, produce and consume, offsets, waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from infra.kafka import ensure_topics, producer_options
from infra.settings import KafkaSettings
from schemas.features import FEATURE_RANGES
from schemas.messages import FeatureEvent, Prediction, Recommendation, Segment
from scorer.settings import ScorerSettings
from sink.app import build_app as build_sink
from sink.settings import SinkSettings
from tests.helpers.db import asyncpg_dsn

_LOW = np.array([low for low, _ in FEATURE_RANGES])


_HIGH = np.array([high for _, high in FEATURE_RANGES])


def random_features(rng: np.random.Generator) -> list[int]:
    """86 in-range values."""
    return [int(v) for v in rng.integers(_LOW, _HIGH + 1)]


def make_events(count: int, prefix: str, seed: int = 0, **fields: Any) -> list[FeatureEvent]:
    """Valid events with distinct customers."""
    rng = np.random.default_rng(seed)
    return [
        FeatureEvent(customer_id=f"{prefix}-{i}", features=tuple(random_features(rng)), **fields)
        for i in range(count)
    ]


def scorer_settings(kafka: KafkaSettings, **overrides: Any) -> ScorerSettings:
    """Scorer settings on the test's broker and topic prefix."""
    return ScorerSettings(**{**kafka.model_dump(), "model_refresh_seconds": 60.0, **overrides})


async def produce(
    settings: KafkaSettings, topic: str, messages: Sequence[tuple[bytes | None, bytes]]
) -> list[Any]:
    """Send (key, value) pairs in order and return the broker's record metadata."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **producer_options(settings))
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def consume(
    settings: KafkaSettings, topic: str, count: int, within_s: float = 20.0
) -> list[ConsumerRecord]:
    """Read `count` records from the start of a topic (group-less), or fail after within_s."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + within_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            records.extend(record for part in batch.values() for record in part)
    finally:
        await consumer.stop()
    assert len(records) >= count, f"{topic}: {len(records)} of {count} records after {within_s}s"
    return records


async def committed_offsets(
    settings: KafkaSettings, group: str, topic_names: list[str]
) -> dict[TopicPartition, int]:
    """Offsets past 0 the group has committed on the given topics (without joining the group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        committed = {}
        for topic in topic_names:
            # Apache Kafka sends no metadata of topics a client did not ask for: the configured count then.
            for partition in sorted(consumer.partitions_for_topic(topic) or range(settings.kafka_partitions)):
                tp = TopicPartition(topic, partition)
                offset = await consumer.committed(tp)
                if offset is not None and offset > 0:
                    committed[tp] = offset
    finally:
        await consumer.stop()
    return committed


def end_offsets(metadata: list[Any]) -> dict[TopicPartition, int]:
    """Per partition, one past the last acknowledged offset (Tansu's ListOffsets is unreliable)."""
    ends: dict[TopicPartition, int] = {}
    for meta in metadata:
        tp = TopicPartition(meta.topic, meta.partition)
        ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    return ends


async def wait_for(predicate: Any, within_s: float = 15.0) -> None:
    """Poll an async predicate until true."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def wait_committed(
    settings: KafkaSettings, group: str, topic_names: list[str], sent: list[Any]
) -> None:
    """Wait until the group has committed exactly the end offsets of what was sent."""

    async def committed() -> bool:
        return await committed_offsets(settings, group, topic_names) == end_offsets(sent)

    await wait_for(committed)

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def prediction(
    customer_id: str, minute: int = 0, batch_id: uuid.UUID | None = None, **fields: Any
) -> Prediction:
    """A valid prediction message (input data for the sink)."""
    return Prediction(
        event_id=uuid.uuid4(),
        customer_id=customer_id,
        model_version=fields.pop("model_version", "v-test"),
        recommendations=[
            Recommendation(product_id="car", name="Car policies", probability=0.5),
            Recommendation(product_id="fire", name="Fire policies", probability=0.25),
            Recommendation(product_id="life", name="Life insurances", probability=0.125),
        ],
        propensity=fields.pop("propensity", 0.1),
        segment=Segment(label="medium", score=50.0),
        scored_at=BASE_TIME + timedelta(minutes=minute),
        source="batch" if batch_id else "event",
        batch_id=batch_id,
        **fields,
    )


def encoded(predictions: list[Prediction]) -> list[tuple[bytes | None, bytes]]:
    """(key, value) pairs as the scorer publishes them."""
    return [(p.customer_id.encode(), p.model_dump_json().encode()) for p in predictions]


def sink_settings(kafka: KafkaSettings, database_url: str, redis_url: str, **overrides: Any) -> SinkSettings:
    """Sink settings on the test's broker, database and Redis."""
    return SinkSettings(
        **{**kafka.model_dump(), "database_url": database_url, "redis_url": redis_url, **overrides}
    )


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query on the test database."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def count(database_url: str, table: str) -> int:
    """Rows in a table."""
    return int((await fetch(database_url, f"SELECT count(*) AS n FROM {table}"))[0]["n"])


@contextlib.asynccontextmanager
async def running(settings: SinkSettings) -> AsyncIterator[Any]:
    """A started sink app, stopped on exit."""
    await ensure_topics(settings)
    app = build_sink(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()



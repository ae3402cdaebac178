"""Scorer and sink together, in-process, on the real broker, Postgres and Redis (the real engine)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio as redis

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from schemas import topics
from scorer.app import build_app as build_scorer
from sink.app import build_app as build_sink
from sink.app import runtime_of as sink_runtime
from tests.helpers.cache import cached_prediction
from tests.helpers.pipeline import (
    count,
    fetch,
    make_events,
    produce,
    scorer_settings,
    sink_settings,
    wait_for,
)


@pytest.fixture(scope="module")
def engine() -> Iterator[InferenceEngine]:
    """The real engine from the committed registry, loaded once for the module."""
    yield InferenceEngine.load()


async def test_events_and_a_csv_batch_flow_to_postgres_and_redis(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str, engine: InferenceEngine
) -> None:
    await ensure_topics(kafka_settings)
    task_id = uuid.uuid4()
    rows = make_events(40, f"csv{unique_id}", seed=7, source="batch", batch_id=task_id)
    events = make_events(25, f"ev{unique_id}", seed=8)
    # Valid as the API saw it would never reach here; this stands in for a row the scorer must reject.
    poison = f'{{"customer_id": "csv{unique_id}-bad", "batch_id": "{task_id}", "features": []}}'.encode()
    await fetch(
        database_url,
        "INSERT INTO batch_jobs (task_id, status, rows_total, rows_valid, published) "
        "VALUES ($1, 'queued', 41, 41, true)",
        task_id,
    )
    await produce(
        kafka_settings,
        topic_name(kafka_settings, topics.BATCH_ROWS),
        [(r.customer_id.encode(), r.model_dump_json().encode()) for r in rows] + [(None, poison)],
    )
    await produce(
        kafka_settings,
        topic_name(kafka_settings, topics.CUSTOMER_FEATURES),
        [(e.customer_id.encode(), e.model_dump_json().encode()) for e in events],
    )

    scorer = build_scorer(
        scorer_settings(kafka_settings, redis_url=redis_url, instance_id=f"e2e-{unique_id}"), engine=engine
    )
    sink = build_sink(sink_settings(kafka_settings, database_url, redis_url, instance_id=f"e2e-{unique_id}"))
    await scorer.start()
    await sink.start()
    try:

        async def completed() -> bool:
            job = await fetch(database_url, "SELECT status FROM batch_jobs WHERE task_id = $1", task_id)
            return job[0]["status"] == "completed" and await count(database_url, "predictions") == 65

        await wait_for(completed, within_s=30)
        sink_stats = sink_runtime(sink).stats

        async def stats_published() -> bool:
            client = redis.from_url(redis_url)
            try:
                scorer_hash = await client.hgetall(f"stats:scorer:e2e-{unique_id}")
                sink_hash = await client.hgetall(f"stats:sink:e2e-{unique_id}")
            finally:
                await client.aclose()
            return scorer_hash.get(b"events_in") == b"66" and sink_hash.get(b"events_out") == b"65"

        await wait_for(stats_published)
    finally:
        await sink.stop()
        await scorer.stop()

    job = (await fetch(database_url, "SELECT * FROM batch_jobs WHERE task_id = $1", task_id))[0]
    assert (job["rows_scored"], job["rows_dead"], job["finished_at"] is not None) == (40, 1, True)
    dead = (await fetch(database_url, "SELECT * FROM dead_letters"))[0]
    assert dead["batch_id"] == task_id and dead["stage"] == "validation" and "features" in dead["reason"]
    assert sink_stats.dlq == 1 and sink_stats.events_out == 65

    client = redis.from_url(redis_url)
    try:
        cached = await client.get(f"predict:{rows[0].customer_id}:{engine.model_version}")
        scorer_hash = await client.hgetall(f"stats:scorer:e2e-{unique_id}")
        ttl = await client.ttl(f"stats:scorer:e2e-{unique_id}")
    finally:
        await client.aclose()
    found = cached_prediction(cached)
    assert found is not None and found.event_id == rows[0].event_id
    assert scorer_hash[b"events_out"] == b"65" and scorer_hash[b"dlq"] == b"1"
    assert float(scorer_hash[b"p99_ms"]) >= float(scorer_hash[b"p50_ms"]) > 0
    assert abs(float(scorer_hash[b"updated_at"]) - time.time()) < 30 and 0 < ttl <= 15

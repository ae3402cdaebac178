"""Pipeline stats: latency window, consumer lag from a real consumer, best-effort Redis stats hash."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer

from infra.kafka import ensure_topics, topic_name
from infra.kafka_connection import connection_options
from infra.settings import KafkaSettings
from infra.stats import (
    STATS_INDEX_KEY,
    EndOffsets,
    LatencyWindow,
    PipelineStats,
    consumer_lag,
    indexed_stats_keys,
    publish_stats_forever,
)
from schemas import topics
from streamscore.embedded import free_port
from tests.helpers.pipeline import produce


def test_latency_window_percentiles_cover_only_recent_samples() -> None:
    window = LatencyWindow(window_s=30.0)
    assert window.percentiles() == (0.0, 0.0)
    for ms in range(1, 101):
        window.record(float(ms))
    p50, p99 = window.percentiles()
    assert 50 <= p50 <= 51 and 99 <= p99 <= 100
    window.window_s = 0.0  # everything is now older than the window
    assert window.percentiles() == (0.0, 0.0)


async def _lag_after_consuming_some(kafka_settings: KafkaSettings, messages: list[tuple[bytes, bytes]],
                                    max_records: int) -> tuple[int, int]:
    """(sum of lag, records consumed) for a group consumer that polled once after `messages` were sent."""
    await ensure_topics(kafka_settings)
    topic = topic_name(kafka_settings, topics.PREDICTIONS)
    await produce(kafka_settings, topic, messages)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_settings.kafka_bootstrap,
        group_id=kafka_settings.topic_prefix + "lag",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    probe = EndOffsets(connection_options(kafka_settings))
    await consumer.start()
    try:
        consumed = 0
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=200, max_records=max_records)
            consumed += sum(len(records) for records in batch.values())
            if consumed:
                break
        lag = await consumer_lag(consumer, probe)
    finally:
        await probe.stop()
        await consumer.stop()
    return sum(lag.values()), consumed


async def test_consumer_lag_is_end_minus_position(kafka_settings: KafkaSettings) -> None:
    lag, consumed = await _lag_after_consuming_some(kafka_settings, [(b"one-key", b"x")] * 10, 4)
    assert lag == 10 - consumed > 0


async def test_consumer_lag_counts_every_record_in_flight_under_load(kafka_settings: KafkaSettings) -> None:
    # Batched sends over many keys: Tansu's listed end offsets leave out each partition's last batch.
    messages = [(f"key-{i % 97}".encode(), b"x" * 200) for i in range(1500)]
    lag, consumed = await _lag_after_consuming_some(kafka_settings, messages, 100)
    assert 0 < consumed <= 100
    assert lag == 1500 - consumed


async def test_stats_hash_is_written_with_ttl_and_a_dead_redis_is_survived(
    redis_url: str, unique_id: str
) -> None:
    stats = PipelineStats(events_in=7, events_out=6, dlq=1, batches=2, lag=3)
    stats.latency.record(4.0)
    key = f"stats:scorer:test-{unique_id}"
    writers = [
        asyncio.create_task(publish_stats_forever(redis_url, key, stats, interval_s=0.05)),
        asyncio.create_task(
            publish_stats_forever(f"redis://127.0.0.1:{free_port()}/0", key + "-dead", stats, interval_s=0.05)
        ),
    ]
    await asyncio.sleep(0.5)
    assert not any(task.done() for task in writers)  # failures are logged, never raised
    for task in writers:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)  # a writer's stop is bounded too
    client = redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
    try:
        fields = await client.hgetall(key)
        ttl = await client.ttl(key)
        indexed = await indexed_stats_keys(client, "stats:scorer:test-")
        index_ttl = await client.ttl(STATS_INDEX_KEY)
        await client.delete(key)
        await client.zrem(STATS_INDEX_KEY, key)
    finally:
        await client.aclose()
    assert {k: fields[k] for k in ("events_in", "events_out", "dlq", "batches", "lag")} == {
        "events_in": "7",
        "events_out": "6",
        "dlq": "1",
        "batches": "2",
        "lag": "3",
    }
    assert float(fields["p50_ms"]) == 4.0 and 0 < ttl <= 15 and float(fields["updated_at"]) > 0
    assert key in indexed and key + "-dead" not in indexed and index_ttl > 0  # readers find it, no SCAN

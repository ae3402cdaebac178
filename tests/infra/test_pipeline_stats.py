"""Pipeline stats: latency window, consumer lag from a real consumer, best-effort Redis stats hash."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from infra.stats import LatencyWindow, PipelineStats, consumer_lag, publish_stats_forever
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


async def test_consumer_lag_is_highwater_minus_position(kafka_settings: KafkaSettings) -> None:
    await ensure_topics(kafka_settings)
    topic = topic_name(kafka_settings, topics.PREDICTIONS)
    await produce(kafka_settings, topic, [(b"one-key", b"x")] * 10)  # one key: one partition
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_settings.kafka_bootstrap,
        group_id=kafka_settings.topic_prefix + "lag",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumed = 0
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=200, max_records=4)
            consumed += sum(len(records) for records in batch.values())
            if consumed:
                break
        lag = await consumer_lag(consumer)
    finally:
        await consumer.stop()
    assert sum(lag.values()) == 10 - consumed > 0


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
            await task
    client = redis.from_url(redis_url, decode_responses=True)
    try:
        fields = await client.hgetall(key)
        ttl = await client.ttl(key)
        await client.delete(key)
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

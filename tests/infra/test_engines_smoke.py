"""The real engines the suite relies on answer, and migrations create every table and view."""

from __future__ import annotations

import asyncpg
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.kafka import ensure_topics, producer_options, topic_name
from infra.settings import KafkaSettings
from tests.helpers.db import asyncpg_dsn


async def test_migrations_create_all_tables_and_the_customers_view(database_url: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        views = await connection.fetch("SELECT viewname FROM pg_views WHERE schemaname = 'public'")
    finally:
        await connection.close()
    names = {row["tablename"] for row in rows}
    assert {row["viewname"] for row in views} == {"customers"}
    assert {
        "predictions",
        "segments",
        "batch_jobs",
        "dead_letters",
        "dead_letter_redrives",
        "users",
        "api_keys",
        "cache_repair",
    } <= names


async def test_redis_round_trip(redis_url: str, unique_id: str) -> None:
    client = redis.from_url(redis_url)
    try:
        await client.set(f"smoke:{unique_id}", "1", ex=10)
        assert await client.get(f"smoke:{unique_id}") == b"1"
    finally:
        await client.aclose()


async def test_broker_topics_produce_consume(kafka_settings: KafkaSettings) -> None:
    await ensure_topics(kafka_settings)
    topic = topic_name(kafka_settings, "predictions.v1")
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_settings.kafka_bootstrap, **producer_options(kafka_settings)
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"c1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_settings.kafka_bootstrap,
        group_id=f"{kafka_settings.topic_prefix}smoke",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
        values = [record.value for records in batch.values() for record in records]
    finally:
        await consumer.stop()
    assert values == [b"hello"]

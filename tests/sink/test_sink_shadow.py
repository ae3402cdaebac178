"""Sink: shadow predictions land in predictions_shadow only (real broker, Postgres, Redis)."""

from __future__ import annotations

import redis.asyncio as redis

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from schemas import topics
from tests.helpers.pipeline import (
    count,
    encoded,
    fetch,
    prediction,
    produce,
    running,
    sink_settings,
    wait_committed,
    wait_for,
)


async def test_shadow_predictions_are_stored_apart_once_and_touch_nothing_else(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str
) -> None:
    settings = sink_settings(kafka_settings, database_url, redis_url)
    await ensure_topics(settings)
    served = [prediction(f"sh{unique_id}-{i}", minute=1) for i in range(10)]
    shadowed = [
        prediction(p.customer_id, minute=1, model_version="v-shadow", propensity=0.8).model_copy(
            update={"event_id": p.event_id}
        )
        for p in served
    ]
    shadow_only = [prediction(f"so{unique_id}-{i}", model_version="v-shadow") for i in range(5)]
    shadow_topic = topic_name(settings, topics.PREDICTIONS_SHADOW)
    predictions_topic = topic_name(settings, topics.PREDICTIONS)
    sent = await produce(settings, predictions_topic, encoded(served))
    sent += await produce(settings, shadow_topic, encoded([*shadowed, *shadow_only]))
    sent += await produce(settings, shadow_topic, encoded(shadowed[:3]))  # redelivered
    sent += await produce(settings, shadow_topic, [(b"bad", b'{"not": "a prediction"}')])

    async with running(settings):

        async def stored() -> bool:
            return await count(database_url, "predictions_shadow") == 15

        await wait_for(stored)
        group = settings.topic_prefix + topics.SINK_GROUP
        await wait_committed(settings, group, [predictions_topic, shadow_topic], sent)

    rows = await fetch(database_url, "SELECT event_id, model_version, propensity FROM predictions_shadow")
    assert {r["event_id"] for r in rows} == {p.event_id for p in [*shadowed, *shadow_only]}
    assert {r["model_version"] for r in rows} == {"v-shadow"}
    assert await count(database_url, "predictions") == 10
    customers = await fetch(database_url, "SELECT customer_id, model_version, propensity FROM customers")
    assert {c["customer_id"] for c in customers} == {p.customer_id for p in served}
    assert {c["model_version"] for c in customers} == {"v-test"}
    assert {c["propensity"] for c in customers} == {0.1}
    segments = await fetch(database_url, "SELECT DISTINCT model_version FROM segments")
    assert [s["model_version"] for s in segments] == ["v-test"]
    assert await count(database_url, "dead_letters") == 0  # a bad shadow record is dropped, not dead-lettered
    client = redis.from_url(redis_url)
    try:
        shadow_keys = [key async for key in client.scan_iter(match=f"predict:*{unique_id}*:v-shadow")]
    finally:
        await client.aclose()
    assert shadow_keys == []

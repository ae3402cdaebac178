"""Faults on the real engines: poison blobs, same-batch pairs, Redis outage and freeze, broker restart.

Each test prints one `FAULT` line (sent, stored, lost, duplicated, dead-lettered, recovery seconds).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Iterator

import orjson
import pytest
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from infra.delivery import Backoff, Outgoing, publish_isolated
from infra.kafka import ensure_topics, producer_options, topic_name
from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from schemas import topics
from schemas.messages import DEAD_LETTER_PAYLOAD_MAX, FeatureEvent, Prediction
from scorer.app import build_app as build_scorer
from scorer.handlers import ProducerSender
from sink.app import build_app as build_sink
from tests.helpers.api import api_settings, running_api
from tests.helpers.cache import cached_prediction
from tests.helpers.faults import PrivateRedis, Stopwatch, cache_mismatches, keyed, report, started
from tests.helpers.pipeline import (
    committed_offsets,
    count,
    encoded,
    end_offsets,
    fetch,
    make_events,
    prediction,
    produce,
    scorer_settings,
    sink_settings,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server this test may stop and freeze."""
    server = PrivateRedis().start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.thaw()
        server.stop()


async def topic_total(
    settings: KafkaSettings, topic: str, within_s: float = 20.0, settle_s: float = 1.5
) -> int:
    """Records in a topic, read from the start until none came for settle_s (Tansu's end offsets trail)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    total, deadline, quiet_since = 0, time.monotonic() + within_s, time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - quiet_since < settle_s:
            batch = await consumer.getmany(timeout_ms=200)
            got = sum(len(part) for part in batch.values())
            if got:
                total, quiet_since = total + got, time.monotonic()
    finally:
        await consumer.stop()
    return total


async def test_oversized_binary_records_are_dead_lettered_bounded_and_nothing_wedges(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str,
    inference_engine: InferenceEngine,
) -> None:
    await ensure_topics(kafka_settings)
    blob = os.urandom(500_000) + b"\xff\xfe"  # not UTF-8
    events = make_events(200, f"big{unique_id}", seed=3)
    messages = keyed(events)
    messages.insert(100, (b"blob", blob))
    features = topic_name(kafka_settings, topics.CUSTOMER_FEATURES)
    predictions_topic = topic_name(kafka_settings, topics.PREDICTIONS)
    sent = await produce(kafka_settings, features, messages)
    await produce(kafka_settings, predictions_topic, [(b"blob", blob)])  # the same blob for the sink
    scorer = build_scorer(scorer_settings(kafka_settings), engine=inference_engine)
    sink = build_sink(sink_settings(kafka_settings, database_url, redis_url))
    clock = Stopwatch()
    async with started(scorer, sink):

        async def done() -> bool:
            return (await count(database_url, "predictions") == 200
                    and await count(database_url, "dead_letters") == 2)

        await wait_for(done, within_s=60)
        recovered = clock()
        group = kafka_settings.topic_prefix + topics.SCORER_GROUP

        async def committed() -> bool:
            return await committed_offsets(kafka_settings, group, [features]) == end_offsets(sent)

        await wait_for(committed)
    published = await topic_total(kafka_settings, predictions_topic)
    letters = await fetch(database_url, "SELECT * FROM dead_letters ORDER BY source_topic")
    for letter in letters:
        assert letter["payload_size"] == len(blob) and letter["payload_truncated"] is True
        assert letter["payload_sha256"] == hashlib.sha256(blob).hexdigest()
        assert letter["payload_encoding"] == "base64"
        assert base64.b64decode(letter["payload"]) == blob[:DEAD_LETTER_PAYLOAD_MAX]
    assert {row["stage"] for row in letters} == {"decode"}
    assert {row["source_topic"] for row in letters} == {features, predictions_topic}
    assert published == 201  # 200 predictions + the blob: every output published once
    report("oversized binary record", sent=201, stored=200, lost=0, duplicated=published - 201,
           dead_lettered=len(letters), recovery_s=recovered)


async def test_output_the_broker_rejects_is_isolated_in_halves_and_the_rest_published_once(
    kafka_settings: KafkaSettings,
) -> None:
    await ensure_topics(kafka_settings)
    topic = topic_name(kafka_settings, topics.PREDICTIONS)
    options = {**producer_options(kafka_settings), "max_request_size": 16 * 1024}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap, **options)
    await producer.start()
    try:
        messages = [Outgoing(topic, f"c{i}".encode(), b"x" * 200, i) for i in range(300)]
        messages[7] = Outgoing(topic, b"c7", b"y" * 40_000, 7)  # larger than a request may be
        messages[250] = Outgoing(topic, b"c250", b"y" * 40_000, 250)
        rejected = await publish_isolated(ProducerSender(producer).send, messages, Backoff(window_s=5))
    finally:
        await producer.stop()
    assert sorted(message.origin for message, _ in rejected) == [7, 250]
    assert all(isinstance(error, MessageSizeTooLargeError) for _, error in rejected)
    assert await topic_total(kafka_settings, topic) == 298


async def test_latest_is_the_later_of_two_events_in_one_batch_everywhere_and_survives_redelivery(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str,
    inference_engine: InferenceEngine,
) -> None:
    await ensure_topics(kafka_settings)
    first = make_events(300, f"pair{unique_id}", seed=1)
    second = [FeatureEvent(customer_id=e.customer_id, features=make_events(1, "x", seed=i)[0].features)
              for i, e in enumerate(first)]
    interleaved = [event for pair in zip(first, second, strict=True) for event in pair]
    await produce(kafka_settings, topic_name(kafka_settings, topics.CUSTOMER_FEATURES), keyed(interleaved))
    scorer = build_scorer(scorer_settings(kafka_settings, batch_max_records=4000), engine=inference_engine)
    sink = build_sink(sink_settings(kafka_settings, database_url, redis_url))
    async with started(scorer, sink):

        async def stored() -> bool:
            return await count(database_url, "predictions") == 600

        await wait_for(stored, within_s=60)
        # Redelivery: the first event's predictions arrive again, after the second's.
        rows = await fetch(database_url, "SELECT * FROM predictions WHERE event_id = ANY($1::uuid[])",
                           [e.event_id for e in first])
        fields = ("event_id", "customer_id", "model_version", "propensity", "scored_at", "source")
        again = [
            Prediction.model_validate({
                **{f: r[f] for f in fields},
                "recommendations": orjson.loads(r["recommendations"]),
                "segment": {"label": r["segment_label"], "score": r["segment_score"]},
            })
            for r in rows
        ]
        sent = await produce(kafka_settings, topic_name(kafka_settings, topics.PREDICTIONS), encoded(again))
        group = kafka_settings.topic_prefix + topics.SINK_GROUP
        topic = topic_name(kafka_settings, topics.PREDICTIONS)

        async def committed() -> bool:
            offsets = await committed_offsets(kafka_settings, group, [topic])
            return all(offsets.get(tp, 0) >= end for tp, end in end_offsets(sent).items())

        await wait_for(committed, within_s=30)
        await asyncio.sleep(1.0)  # the cache repair of redelivered keys runs every 0.5 s
    expected = {e.customer_id: e.event_id for e in second}
    customers = await fetch(database_url, "SELECT customer_id, last_event_id FROM customers")
    wrong_customers = sum(expected[r["customer_id"]] != r["last_event_id"] for r in customers)
    segments = await fetch(
        database_url,
        "SELECT s.label, s.score, p.segment_label, p.segment_score FROM segments s "
        "JOIN predictions p ON p.event_id = (SELECT last_event_id FROM customers c "
        "WHERE c.customer_id = s.customer_id)",
    )
    wrong_segments = sum((r["label"], r["score"]) != (r["segment_label"], r["segment_score"])
                         for r in segments)
    client = redis.from_url(redis_url)
    try:
        values = await client.mget([f"predict:{c}:{inference_engine.model_version}" for c in expected])
    finally:
        await client.aclose()
    cached = [cached_prediction(v) for v in values]
    wrong_cache = sum(p.event_id != expected[c]
                      for c, p in zip(expected, cached, strict=True) if p is not None)
    async with running_api(api_settings(kafka_settings, database_url, redis_url), inference_engine) as api:
        sample = list(expected)[:30]
        answers = [await api.client.get(f"/api/v1/predictions/{c}") for c in sample]
    wrong_api = sum(a.json()["event_id"] != str(expected[c]) for c, a in zip(sample, answers, strict=True))
    report("two events per customer in one batch", sent=600, stored=await count(database_url, "predictions"),
           lost=0, duplicated=0, dead_lettered=await count(database_url, "dead_letters"),
           wrong_latest=wrong_customers + wrong_segments + wrong_cache + wrong_api)
    assert len(customers) == 300 and wrong_customers == 0
    assert len(segments) == 300 and wrong_segments == 0
    assert None not in values and wrong_cache == 0
    assert wrong_api == 0


async def test_redis_outage_then_freeze_postgres_keeps_up_and_the_cache_is_repaired(
    kafka_settings: KafkaSettings, database_url: str, private_redis: PrivateRedis, unique_id: str,
    inference_engine: InferenceEngine,
) -> None:
    settings = sink_settings(kafka_settings, database_url, private_redis.url)
    await ensure_topics(settings)
    topic = topic_name(settings, topics.PREDICTIONS)
    customers = [f"r{unique_id}-{i}" for i in range(500)]
    sink = build_sink(settings)
    async with started(sink):
        await produce(settings, topic, encoded([prediction(c, minute=1) for c in customers]))

        async def first_cached() -> bool:
            return (await count(database_url, "predictions") == 500
                    and await cache_mismatches(private_redis.url, database_url, "v-test") == 0)

        await wait_for(first_cached, within_s=30)

        # Outage: Redis stopped while 700 predictions (500 newer ones, 200 new customers) arrive.
        private_redis.stop()
        newer = [prediction(c, minute=2, propensity=0.9) for c in customers]
        newer += [prediction(f"r{unique_id}-new-{i}", minute=2) for i in range(200)]
        await produce(settings, topic, encoded(newer))
        clock = Stopwatch()

        async def all_in_postgres() -> bool:
            return await count(database_url, "predictions") == 1200

        await wait_for(all_in_postgres, within_s=30)
        stored_during_outage_s = clock()

        async def all_noted() -> bool:  # noted in a second transaction, once the Redis write after it failed
            return await count(database_url, "cache_repair") == 700

        await wait_for(all_noted, within_s=15)
        noted = await count(database_url, "cache_repair")
        private_redis.start()
        clock = Stopwatch()

        async def repaired() -> bool:
            return (await cache_mismatches(private_redis.url, database_url, "v-test") == 0
                    and await count(database_url, "cache_repair") == 0)

        await wait_for(repaired, within_s=15)
        outage_recovery_s = clock()
        report("redis stopped", sent=700, stored=700, lost=0, duplicated=0, dead_lettered=0,
               stored_while_down_s=stored_during_outage_s, keys_noted=noted, recovery_s=outage_recovery_s)
        assert noted == 700 and outage_recovery_s < 5

        # Freeze: Redis SIGSTOPped with its connections open; the sink must not hold Postgres on it.
        api_config = api_settings(kafka_settings, database_url, private_redis.url)
        async with running_api(api_config, inference_engine) as api:
            private_redis.freeze()
            try:
                third = [prediction(c, minute=3, propensity=0.5) for c in customers[:300]]
                await produce(settings, topic, encoded(third))
                clock = Stopwatch()

                async def third_in_postgres() -> bool:
                    return await count(database_url, "predictions") == 1500

                await wait_for(third_in_postgres, within_s=30)
                frozen_store_s = clock()
                timings = []
                for customer in customers[:20]:
                    began = time.monotonic()
                    answer = await api.client.get(f"/api/v1/predictions/{customer}")
                    timings.append(time.monotonic() - began)
                    assert answer.status_code == 200 and answer.json()["propensity"] == 0.5
                began = time.monotonic()
                ready = await api.client.get("/ready")
                ready_s = time.monotonic() - began
            finally:
                private_redis.thaw()
            clock = Stopwatch()
            await wait_for(repaired, within_s=15)
            freeze_recovery_s = clock()
        report("redis frozen", sent=300, stored=300, lost=0, duplicated=0, dead_lettered=0,
               stored_while_frozen_s=frozen_store_s, get_max_s=round(max(timings), 3),
               ready_s=round(ready_s, 3), recovery_s=freeze_recovery_s)
        assert ready.status_code == 503 and ready.json()["dependencies"]["redis"]["ok"] is False
        assert ready_s < 1.5 and max(timings) < 0.5 and freeze_recovery_s < 5
    assert await count(database_url, "cache_repair") == 0



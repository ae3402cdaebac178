"""Scorer: micro-batch scoring, dead-lettering, offset commits (real broker and TestKafkaBroker)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from faststream import TestApp
from faststream.kafka import KafkaBroker, TestKafkaBroker

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from schemas import topics
from schemas.messages import DeadLetter, FeatureEvent, Prediction
from scorer.app import build_app, runtime_of
from scorer.scoring import score_rows
from scorer.settings import ScorerSettings
from tests.helpers.pipeline import (
    committed_offsets,
    consume,
    end_offsets,
    make_events,
    produce,
    random_features,
    scorer_settings,
    wait_for,
)


@pytest.fixture(scope="module")
def engine() -> Iterator[InferenceEngine]:
    """The real engine from the committed registry, loaded once for the module."""
    yield InferenceEngine.load()


















def test_score_rows_isolates_a_row_that_breaks_inference(engine: InferenceEngine) -> None:
    rng = np.random.default_rng(1)
    matrix = np.array([random_features(rng) for _ in range(6)], dtype=np.int64)
    poison = 3

    class FailsOnMarkedRow:
        """The real engine, except that any call containing the marked row raises (fault injection)."""

        def score(self, features: np.ndarray) -> Any:
            if any((row == matrix[poison]).all() for row in features):
                raise FloatingPointError("synthetic failure")
            return engine.score(features)

    rows = score_rows(FailsOnMarkedRow(), matrix)
    expected = engine.score(np.delete(matrix, poison, axis=0)).records()
    assert isinstance(rows[poison], str) and "synthetic failure" in rows[poison]
    assert [row for i, row in enumerate(rows) if i != poison] == expected


async def test_handler_publishes_predictions_and_dead_letters(engine: InferenceEngine) -> None:
    settings = ScorerSettings(topic_prefix="unit.", kafka_idempotent=False)
    app = build_app(settings, engine=engine)
    broker = cast(KafkaBroker, app.broker)
    seen: dict[str, list[dict[str, Any]]] = {"predictions": [], "dead": []}

    @broker.subscriber(topic_name(settings, topics.PREDICTIONS))
    async def on_prediction(body: dict[str, Any]) -> None:
        seen["predictions"].append(body)

    @broker.subscriber(topic_name(settings, topics.DEAD_LETTER))
    async def on_dead(body: dict[str, Any]) -> None:
        seen["dead"].append(body)

    event = make_events(1, "unit")[0]
    # connect_only: TestApp starts the app, so its start-up hooks choose the sender as in production.
    async with TestKafkaBroker(broker, connect_only=True) as test_broker, TestApp(app):
        features_topic = topic_name(settings, topics.CUSTOMER_FEATURES)
        await test_broker.publish(event.model_dump_json().encode(), features_topic, key=b"unit-0")
        await test_broker.publish(b'{"customer_id": "x", "features": [1, 2]}', features_topic)

    assert len(seen["predictions"]) == 1 and len(seen["dead"]) == 1
    prediction = Prediction.model_validate(seen["predictions"][0])
    assert prediction.event_id == event.event_id and prediction.customer_id == event.customer_id
    assert prediction.model_version == engine.model_version
    dead = DeadLetter.model_validate(seen["dead"][0])
    assert dead.stage == "validation" and "features" in dead.reason and dead.customer_id == "x"


async def test_scorer_scores_both_topics_keyed_by_customer(
    kafka_settings: KafkaSettings, engine: InferenceEngine
) -> None:
    await ensure_topics(kafka_settings)
    events = make_events(60, "cust", seed=2)
    batch_id = uuid.uuid4()
    rows = make_events(25, "row", seed=3, source="batch", batch_id=batch_id)
    repeat = FeatureEvent(customer_id="cust-0", features=events[1].features)  # same key as events[0]
    features_topic = topic_name(kafka_settings, topics.CUSTOMER_FEATURES)
    rows_topic = topic_name(kafka_settings, topics.BATCH_ROWS)
    sent = await produce(
        kafka_settings,
        features_topic,
        [(e.customer_id.encode(), e.model_dump_json().encode()) for e in events],
    )
    sent += await produce(
        kafka_settings, rows_topic, [(e.customer_id.encode(), e.model_dump_json().encode()) for e in rows]
    )
    sent += await produce(kafka_settings, features_topic, [(b"cust-0", repeat.model_dump_json().encode())])
    every = [*events, *rows, repeat]

    app = build_app(scorer_settings(kafka_settings), engine=engine)
    await app.start()
    try:
        records = await consume(kafka_settings, topic_name(kafka_settings, topics.PREDICTIONS), len(every))
        group = kafka_settings.topic_prefix + topics.SCORER_GROUP
        ends = end_offsets(sent)

        async def all_committed() -> bool:
            return await committed_offsets(kafka_settings, group, [features_topic, rows_topic]) == ends

        await wait_for(all_committed)
        stats = runtime_of(app).stats
    finally:
        await app.stop()

    predictions = {p.event_id: (p, r) for r in records for p in [Prediction.model_validate_json(r.value)]}
    assert set(predictions) == {e.event_id for e in every}
    assert all(record.key == p.customer_id.encode() for p, record in predictions.values())
    assert predictions[events[0].event_id][1].partition == predictions[repeat.event_id][1].partition
    assert all(predictions[e.event_id][0].batch_id == batch_id for e in rows)
    assert {predictions[e.event_id][0].source for e in rows} == {"batch"}
    expected = engine.score(np.array([e.features for e in every])).records()
    for event, fields in zip(every, expected, strict=True):
        got = predictions[event.event_id][0]
        assert [r.product_id for r in got.recommendations] == [
            r["product_id"] for r in fields["recommendations"]
        ]
        assert got.propensity == pytest.approx(fields["propensity"])
        assert got.segment.label == fields["segment"]["label"]
    assert stats.events_in == len(every) and stats.events_out == len(every) and stats.dlq == 0


async def test_poison_records_reach_the_dead_letter_topic_alone(
    kafka_settings: KafkaSettings, engine: InferenceEngine
) -> None:
    await ensure_topics(kafka_settings)
    events = make_events(12, "mix", seed=4)
    out_of_range = orjson.loads(events[0].model_dump_json())
    out_of_range.update(event_id=str(uuid.uuid4()), customer_id="mix-bad")
    out_of_range["features"][3] = 99
    messages = [(e.customer_id.encode(), e.model_dump_json().encode()) for e in events]
    messages.insert(5, (b"mix-bad", orjson.dumps(out_of_range)))
    messages.insert(9, (b"mix-junk", b"\xff not json"))
    topic = topic_name(kafka_settings, topics.CUSTOMER_FEATURES)
    metadata = await produce(kafka_settings, topic, messages)

    app = build_app(scorer_settings(kafka_settings), engine=engine)
    await app.start()
    try:
        dead_records = await consume(kafka_settings, topic_name(kafka_settings, topics.DEAD_LETTER), 2)
        predictions = await consume(
            kafka_settings, topic_name(kafka_settings, topics.PREDICTIONS), len(events)
        )
    finally:
        await app.stop()

    assert {Prediction.model_validate_json(r.value).event_id for r in predictions} == {
        e.event_id for e in events
    }
    dead = {d.stage: d for d in (DeadLetter.model_validate_json(r.value) for r in dead_records)}
    assert set(dead) == {"validation", "decode"}
    bad = dead["validation"]
    assert "features" in bad.reason and "MGEMLEEF" in bad.reason
    assert (bad.topic, bad.partition, bad.offset) == (topic, metadata[5].partition, metadata[5].offset)
    assert str(bad.event_id) == out_of_range["event_id"] and bad.customer_id == "mix-bad"
    junk = dead["decode"]
    assert (junk.partition, junk.offset) == (metadata[9].partition, metadata[9].offset)
    assert junk.payload_encoding == "base64" and junk.event_id is None  # not UTF-8: carried as base64
    assert base64.b64decode(junk.payload).endswith(b"not json") and junk.payload_truncated is False


async def test_failed_publish_commits_nothing_and_is_retried_with_backoff(
    kafka_settings: KafkaSettings, engine: InferenceEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ensure_topics(kafka_settings)
    events = make_events(30, "retry", seed=5)
    topic = topic_name(kafka_settings, topics.CUSTOMER_FEATURES)
    sent = await produce(
        kafka_settings, topic, [(e.customer_id.encode(), e.model_dump_json().encode()) for e in events]
    )

    app = build_app(scorer_settings(kafka_settings), engine=engine)
    predictions_topic = topic_name(kafka_settings, topics.PREDICTIONS)
    real_send = AIOKafkaProducer.send_batch
    failures: dict[str, Any] = {"left": 3, "committed_while_failing": None}
    group = kafka_settings.topic_prefix + topics.SCORER_GROUP

    async def flaky_send(self: AIOKafkaProducer, batch: Any, to: str, *args: Any, **kwargs: Any) -> Any:
        """aiokafka's send_batch, except that the broker never acknowledges the first prediction batches."""
        if to == predictions_topic and failures["left"]:
            failures["left"] -= 1
            failures["committed_while_failing"] = await committed_offsets(kafka_settings, group, [topic])
            unacknowledged: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            unacknowledged.set_exception(KafkaTimeoutError("injected: broker did not acknowledge"))
            return unacknowledged
        return await real_send(self, batch, to, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaProducer, "send_batch", flaky_send)
    await app.start()
    try:
        records = await consume(kafka_settings, predictions_topic, len(events))
        ends = end_offsets(sent)

        async def all_committed() -> bool:
            return await committed_offsets(kafka_settings, group, [topic]) == ends

        await wait_for(all_committed)
        stats = runtime_of(app).stats
    finally:
        await app.stop()

    assert failures["left"] == 0 and failures["committed_while_failing"] == {}
    assert {Prediction.model_validate_json(r.value).event_id for r in records} == {e.event_id for e in events}
    # A transient failure is retried in the handler with backoff: no rewind, acknowledged output not resent.
    assert stats.events_in == len(events)
    assert stats.events_out == len(events)

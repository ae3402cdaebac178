"""A broker without idempotent producers (InitProducerId) is detected: one warning naming the setting."""

from __future__ import annotations

import logging

import pytest

from infra.kafka import IDEMPOTENCE_SETTING, ensure_topics, resolve_idempotence, topic_name
from infra.settings import KafkaSettings


async def test_idempotence_falls_back_with_one_warning_on_a_broker_without_it(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = KafkaSettings(kafka_bootstrap=kafka_bootstrap, kafka_idempotent=True)
    supported = await resolve_idempotence(settings)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert supported is False
    assert len(problems) == 1, [r.getMessage() for r in problems]
    assert IDEMPOTENCE_SETTING in problems[0].getMessage()
    assert "InitProducerId" in problems[0].getMessage()


async def test_idempotence_is_kept_without_a_warning_on_apache_kafka(
    apache_kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = KafkaSettings(kafka_bootstrap=apache_kafka_bootstrap.split(",")[0], kafka_idempotent=True)
    assert await resolve_idempotence(settings) is True
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_idempotence_off_asks_the_broker_nothing(caplog: pytest.LogCaptureFixture) -> None:
    settings = KafkaSettings(kafka_bootstrap="127.0.0.1:9", kafka_idempotent=False)  # nothing listens there
    assert await resolve_idempotence(settings) is False
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_consumer_service_runs_on_a_broker_without_idempotence(kafka_settings: KafkaSettings) -> None:
    """The scorer with the default STREAMSCORE_KAFKA_IDEMPOTENT=true starts and scores on the test broker."""
    from models.engine import InferenceEngine
    from schemas import topics
    from schemas.messages import Prediction
    from scorer.app import build_app
    from tests.helpers.pipeline import consume, make_events, produce, scorer_settings

    await ensure_topics(kafka_settings)
    event = make_events(1, "idem", seed=5)[0]
    await produce(kafka_settings, topic_name(kafka_settings, topics.CUSTOMER_FEATURES),
                  [(event.customer_id.encode(), event.model_dump_json().encode())])
    settings = scorer_settings(kafka_settings, kafka_idempotent=True)
    app = build_app(settings, engine=InferenceEngine.load())
    await app.start()
    try:
        predictions = topic_name(kafka_settings, topics.PREDICTIONS)
        records = await consume(kafka_settings, predictions, 1, within_s=60)
    finally:
        await app.stop()
    assert Prediction.model_validate_json(records[0].value).event_id == event.event_id
    assert settings.kafka_idempotent is False  # resolved once, for every producer

"""A broker without idempotent producers (InitProducerId) is detected: one warning naming the setting."""

from __future__ import annotations

import logging

import pytest

from infra.kafka import IDEMPOTENCE_SETTING, resolve_idempotence
from infra.settings import KafkaSettings
from tests.helpers import engines


async def test_idempotence_falls_back_with_one_warning_on_a_broker_without_it(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = KafkaSettings(kafka_bootstrap=kafka_bootstrap, kafka_idempotent=True)
    supported = await resolve_idempotence(settings)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if engines.docker_available():  # a real Kafka grants producer ids
        assert supported and not problems
        return
    assert supported is False
    assert len(problems) == 1, [r.getMessage() for r in problems]
    assert IDEMPOTENCE_SETTING in problems[0].getMessage()
    assert "InitProducerId" in problems[0].getMessage()


async def test_idempotence_off_asks_the_broker_nothing(caplog: pytest.LogCaptureFixture) -> None:
    settings = KafkaSettings(kafka_bootstrap="127.0.0.1:9", kafka_idempotent=False)  # nothing listens there
    assert await resolve_idempotence(settings) is False
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

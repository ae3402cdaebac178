"""The end-to-end and fault tests run on each broker: Tansu (the dev broker) and Apache Kafka."""

from __future__ import annotations

import pytest

from infra.settings import KafkaSettings
from tests.helpers import engines


@pytest.fixture
def kafka_settings(broker: engines.Broker) -> KafkaSettings:
    """Settings on the test's broker (idempotent producers where it grants producer ids)."""
    return engines.broker_settings(broker)

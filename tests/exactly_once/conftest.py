"""Settings on the suite's Apache Kafka (`apache_kafka_bootstrap`, tests/conftest.py): it has transactions."""

from __future__ import annotations

import pytest

from infra.settings import KafkaSettings
from tests.helpers import engines


@pytest.fixture
def apache_kafka(apache_kafka_bootstrap: str) -> KafkaSettings:
    """Apache Kafka settings with a per-test topic prefix (idempotent producers: the broker has them)."""
    return engines.broker_settings(engines.Broker("kafka", apache_kafka_bootstrap, idempotent=True))

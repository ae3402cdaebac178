"""The Apache Kafka these tests need (transactions): `apache_kafka_bootstrap`.

A minimal stand-in until the suite's own Apache Kafka engine lands (issue 31): it reads
STREAMSCORE_TEST_KAFKA_BOOTSTRAP and fails, saying so, when it is not set.
"""

from __future__ import annotations

import os
import uuid

import pytest

from infra.settings import KafkaSettings

BOOTSTRAP_VARIABLE = "STREAMSCORE_TEST_KAFKA_BOOTSTRAP"


@pytest.fixture(scope="session")
def apache_kafka_bootstrap() -> str:
    """Bootstrap address of a real Apache Kafka (with transactions)."""
    bootstrap = os.environ.get(BOOTSTRAP_VARIABLE, "")
    if not bootstrap:
        pytest.fail(f"these tests need Apache Kafka: set {BOOTSTRAP_VARIABLE}=host:port", pytrace=False)
    return bootstrap


@pytest.fixture
def apache_kafka(apache_kafka_bootstrap: str) -> KafkaSettings:
    """Apache Kafka settings with a per-test topic prefix (idempotent producers: the broker has them)."""
    return KafkaSettings(kafka_bootstrap=apache_kafka_bootstrap, kafka_partitions=3, kafka_idempotent=True,
                         topic_prefix=f"t{uuid.uuid4().hex[:10]}.")

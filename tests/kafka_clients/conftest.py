"""Stand-ins for the Apache Kafka fixtures of the kafka-engine launcher (replaced by it at merge).

They only read where an already running Apache Kafka is, and fail, naming the variables, when it is not
set: these tests are about the real broker, so they neither skip nor fall back to another broker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

SECURED = "STREAMSCORE_TEST_SECURED_KAFKA_"


@dataclass(frozen=True)
class SecuredKafka:
    """A SASL_SSL (SCRAM-SHA-512) listener: its comma-separated bootstrap list, CA and one SCRAM user."""

    bootstrap: str
    cafile: str
    username: str
    password: str


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: these tests need an Apache Kafka (the kafka-engine launcher starts "
                    f"one; until then start it by hand and set {name})", pytrace=False)
    return value


@pytest.fixture(scope="session")
def secured_kafka() -> SecuredKafka:
    """The SASL_SSL listener, from STREAMSCORE_TEST_SECURED_KAFKA_{BOOTSTRAP,CAFILE,USERNAME,PASSWORD}."""
    parts = ("BOOTSTRAP", "CAFILE", "USERNAME", "PASSWORD")
    return SecuredKafka(*(_required(SECURED + part) for part in parts))


@pytest.fixture(scope="session")
def apache_kafka_bootstrap() -> str:
    """A PLAINTEXT bootstrap list of an Apache Kafka, from STREAMSCORE_TEST_KAFKA_BOOTSTRAP."""
    return _required("STREAMSCORE_TEST_KAFKA_BOOTSTRAP")

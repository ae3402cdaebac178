"""The SASL_SSL listener of the suite's secured Apache Kafka, in the shape these tests use."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streamscore.kafka_server import KafkaCluster


@dataclass(frozen=True)
class SecuredKafka:
    """A SASL_SSL (SCRAM-SHA-512) listener: its comma-separated bootstrap list, CA and one SCRAM user."""

    bootstrap: str
    cafile: str
    username: str
    password: str


@pytest.fixture(scope="session")
def secured_kafka(kafka_cluster_secure: KafkaCluster) -> SecuredKafka:
    """The secured cluster's client listener, CA file and SCRAM user."""
    assert kafka_cluster_secure.cafile is not None
    return SecuredKafka(kafka_cluster_secure.bootstrap, str(kafka_cluster_secure.cafile),
                        kafka_cluster_secure.username, kafka_cluster_secure.password)

"""Locate real engines for the tests; Postgres and Redis are found as `streamscore.engines` finds them.

The handler-level tests use Tansu; the end-to-end and fault tests run on Tansu and on Apache Kafka.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import pytest

from infra.settings import KafkaSettings
from streamscore.embedded import TansuBroker
from streamscore.engines import Announce, docker_available, postgres_admin_url, redis_url
from streamscore.kafka_classpath import kafka_version, missing_tools
from streamscore.kafka_server import KafkaCluster

__all__ = ["docker_available", "postgres_admin_url", "redis_url"]  # found in streamscore.engines


@contextlib.contextmanager
def kafka_bootstrap() -> Iterator[str]:
    """Tansu, the embedded dev broker (memory only, no idempotent producers), for handler-level tests."""
    broker = TansuBroker().start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@dataclass(frozen=True)
class Broker:
    """A broker the end-to-end and fault tests run on."""

    name: str
    bootstrap: str
    idempotent: bool  # grants producer ids: idempotent producers and transactions


def broker_settings(broker: Broker, replication_factor: int = 1) -> KafkaSettings:
    """Settings on this broker with a per-test topic prefix, so each test has its own topics and groups."""
    return KafkaSettings(kafka_bootstrap=broker.bootstrap, kafka_partitions=3,
                         kafka_replication_factor=replication_factor, kafka_idempotent=broker.idempotent,
                         topic_prefix=f"t{uuid.uuid4().hex[:10]}.")


def engine_missing(reason: str) -> NoReturn:
    """Skip the tests of a tier whose engine is not here, with one line saying why; under CI, fail."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI runs every tier (CI is set)", pytrace=False)
    pytest.skip(reason)


def no_maven_kafka() -> str | None:
    """Why Apache Kafka cannot run from Maven here, or None when it can."""
    if missing := missing_tools():
        return f"no Apache Kafka for its tier: no {' and no '.join(missing)} on PATH, no Docker engine, " \
               "no STREAMSCORE_TEST_KAFKA_BOOTSTRAP"
    return None


@contextlib.contextmanager
def apache_kafka_bootstrap(announce: Announce = print) -> Iterator[str]:
    """An Apache Kafka cluster for the session: env-configured, testcontainers (Docker), or from Maven."""
    if url := os.environ.get("STREAMSCORE_TEST_KAFKA_BOOTSTRAP"):
        announce("kafka: STREAMSCORE_TEST_KAFKA_BOOTSTRAP (set in the environment)")
        yield url
    elif docker_available():
        from testcontainers.kafka import KafkaContainer

        announce("kafka: a Docker container (testcontainers' Kafka module)")
        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        with kafka_cluster(nodes=1) as cluster:
            announce(f"kafka: Apache Kafka {kafka_version()} from Maven jars at {cluster.bootstrap} "
                     "(no STREAMSCORE_TEST_KAFKA_BOOTSTRAP, no Docker engine)")
            yield cluster.bootstrap


@contextlib.contextmanager
def kafka_cluster(nodes: int, secure: bool = False) -> Iterator[KafkaCluster]:
    """Apache Kafka KRaft nodes from Maven jars in a temp dir, stopped and removed at the end."""
    if reason := no_maven_kafka():
        engine_missing(reason)
    cluster = KafkaCluster(nodes=nodes, secure=secure).start()
    try:
        yield cluster
    finally:
        cluster.stop()

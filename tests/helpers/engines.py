"""Locate real engines for the tests: env-configured, then testcontainers (Docker), then local/embedded.

The handler-level tests use Tansu; the end-to-end and fault tests run on Tansu and on Apache Kafka.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from infra.settings import KafkaSettings
from streamscore.embedded import EmbeddedPostgres, EmbeddedRedis, TansuBroker, port_open
from streamscore.kafka_classpath import missing_tools
from streamscore.kafka_server import KafkaCluster


def _force_embedded() -> bool:
    """STREAMSCORE_TEST_EMBEDDED=1 skips Docker and the local servers (to check the fresh-machine path)."""
    return bool(os.environ.get("STREAMSCORE_TEST_EMBEDDED"))


def docker_available() -> bool:
    """True when a Docker engine answers (the client alone is not enough)."""
    if _force_embedded() or os.environ.get("STREAMSCORE_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


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


def broker_settings(broker: Broker) -> KafkaSettings:
    """Settings on this broker with a per-test topic prefix, so each test has its own topics and groups."""
    return KafkaSettings(kafka_bootstrap=broker.bootstrap, kafka_partitions=3,
                         kafka_idempotent=broker.idempotent, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")


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
def apache_kafka_bootstrap() -> Iterator[str]:
    """An Apache Kafka cluster for the session: env-configured, testcontainers (Docker), or from Maven."""
    if url := os.environ.get("STREAMSCORE_TEST_KAFKA_BOOTSTRAP"):
        yield url
    elif docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        with kafka_cluster(nodes=1) as cluster:
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


@contextlib.contextmanager
def postgres_admin_url() -> Iterator[str]:
    """An asyncpg URL of a Postgres server where tests may create databases."""
    if url := os.environ.get("STREAMSCORE_TEST_DATABASE_URL"):
        yield url
    elif not _force_embedded() and port_open("127.0.0.1", 5432):
        yield "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    elif docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as pg:
            yield pg.get_connection_url()
    else:
        server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="streamscore-pg-"))).start()
        try:
            yield server.url.rsplit("/", 1)[0] + "/postgres"
        finally:
            server.stop()


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """A Redis URL for the whole session."""
    if url := os.environ.get("STREAMSCORE_TEST_REDIS_URL"):
        yield url
    elif not _force_embedded() and port_open("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
    elif docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer() as container:
            yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
    else:
        server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="streamscore-redis-"))).start()
        try:
            yield server.url
        finally:
            server.stop()

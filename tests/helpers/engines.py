"""Locate real engines for the tests: env-configured, then testcontainers (Docker), then local/embedded."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from streamscore.embedded import EmbeddedPostgres, EmbeddedRedis, TansuBroker, port_open


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
    """A Kafka-compatible bootstrap address for the whole session."""
    if url := os.environ.get("STREAMSCORE_TEST_KAFKA_BOOTSTRAP"):
        yield url
    elif docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        broker = TansuBroker().start()
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


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

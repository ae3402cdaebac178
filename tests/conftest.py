"""Session fixtures for real engines (broker, Postgres, Redis) and per-test isolation."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from infra.settings import KafkaSettings
from streamscore.kafka_server import KafkaCluster
from tests.helpers import engines
from tests.helpers.db import fresh_database

pytest_plugins = ["tests.helpers.api_fixtures", "tests.helpers.watchdog"]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of Tansu, the embedded Kafka-compatible dev broker (handler-level tests)."""
    with engines.kafka_bootstrap() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def apache_kafka_bootstrap(pytestconfig: pytest.Config) -> Iterator[str]:
    """Bootstrap list of an Apache Kafka cluster (skipped with the reason where none can run; CI fails)."""
    with engines.apache_kafka_bootstrap(announcer(pytestconfig)) as bootstrap:
        yield bootstrap


@pytest.fixture(params=["tansu", "kafka"])
def broker(request: pytest.FixtureRequest) -> engines.Broker:
    """Each broker the pipeline runs on; Apache Kafka only starts for the first test that asks for it."""
    if request.param == "tansu":
        return engines.Broker("tansu", request.getfixturevalue("kafka_bootstrap"), idempotent=False)
    return engines.Broker("kafka", request.getfixturevalue("apache_kafka_bootstrap"), idempotent=True)


@pytest.fixture(scope="session")
def _kafka_cluster3() -> Iterator[KafkaCluster]:
    with engines.kafka_cluster(nodes=3) as cluster:
        yield cluster


@pytest.fixture
def kafka_cluster3(_kafka_cluster3: KafkaCluster) -> Iterator[KafkaCluster]:
    """A 3-node KRaft cluster (RF 3, min ISR 2) a test may kill nodes of; they are back up afterwards."""
    yield _kafka_cluster3
    for node in _kafka_cluster3.members:
        if not node.running:
            _kafka_cluster3.restart(node.node_id)


@pytest.fixture(scope="session")
def kafka_cluster_secure() -> Iterator[KafkaCluster]:
    """A 1-node cluster whose client listener is SASL_SSL (SCRAM-SHA-512, a CA made for the run)."""
    with engines.kafka_cluster(nodes=1, secure=True) as cluster:
        yield cluster


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Broker settings on Tansu with a per-test topic prefix, so each test has its own topics and groups."""
    return engines.broker_settings(engines.Broker("tansu", kafka_bootstrap, idempotent=False))


def announcer(config: pytest.Config) -> Callable[[str], None]:
    """Prints one line on the terminal past pytest's output capture (which engine was chosen, and why)."""

    def announce(line: str) -> None:
        capture = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"\nengine {line}", flush=True)

    return announce


@pytest.fixture(scope="session")
def postgres_admin_url(pytestconfig: pytest.Config) -> Iterator[str]:
    """URL of a Postgres server where tests may create databases."""
    with engines.postgres_admin_url(announcer(pytestconfig)) as url:
        yield url



@pytest.fixture
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    async with fresh_database(postgres_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(pytestconfig: pytest.Config) -> Iterator[str]:
    """URL of a real Redis; tests isolate by using unique customer ids."""
    with engines.redis_url(announcer(pytestconfig)) as url:
        yield url


@pytest.fixture
def unique_id() -> str:
    """A short unique token for customer ids and names in one test."""
    return uuid.uuid4().hex[:10]

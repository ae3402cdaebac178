"""Session fixtures for real engines (broker, Postgres, Redis) and per-test isolation."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from infra.settings import KafkaSettings
from migrations.runner import upgrade_head
from tests.helpers import engines
from tests.helpers.db import asyncpg_dsn

pytest_plugins = ["tests.helpers.api_fixtures", "tests.helpers.watchdog"]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka-compatible broker."""
    with engines.kafka_bootstrap() as bootstrap:
        yield bootstrap


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Broker settings with a per-test topic prefix, so each test has its own topics and groups."""
    return KafkaSettings(
        kafka_bootstrap=kafka_bootstrap,
        kafka_partitions=3,
        kafka_idempotent=engines.docker_available(),
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
    )


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
    name = f"ss_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(postgres_admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(upgrade_head, url)
    yield url
    admin = await asyncpg.connect(asyncpg_dsn(postgres_admin_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def redis_url(pytestconfig: pytest.Config) -> Iterator[str]:
    """URL of a real Redis; tests isolate by using unique customer ids."""
    with engines.redis_url(announcer(pytestconfig)) as url:
        yield url


@pytest.fixture
def unique_id() -> str:
    """A short unique token for customer ids and names in one test."""
    return uuid.uuid4().hex[:10]

"""The test engines do not depend on how the machine's Postgres is set up (a password on loopback, say)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import asyncpg
import pytest

from streamscore import engines
from streamscore.private_postgres import PrivatePostgres, server_bindir
from tests.helpers.db import asyncpg_dsn

pytestmark = pytest.mark.skipif(
    server_bindir() is None and not os.environ.get("CI"), reason="no Postgres server binaries (initdb)"
)
SECRET = "s3cret-pw"


@pytest.fixture(scope="module")
def guarded_cluster() -> Iterator[PrivatePostgres]:
    """A cluster that asks for a password on TCP, as the Debian cluster of this machine kind does."""
    server = PrivatePostgres(password=SECRET).init().start()
    try:
        yield server
    finally:
        server.remove()


async def select_one(url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await connection.fetchval("SELECT 1"))
    finally:
        await connection.close()


def test_the_refusal_names_the_password(guarded_cluster: PrivatePostgres) -> None:
    reason = engines.postgres_refusal(guarded_cluster.url(password=""))
    assert reason is not None and "password" in reason
    assert engines.postgres_refusal(guarded_cluster.url()) is None


async def test_a_server_that_refuses_us_is_passed_over_for_a_private_cluster(
    guarded_cluster: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMSCORE_TEST_DATABASE_URL", raising=False)
    monkeypatch.delenv("STREAMSCORE_TEST_EMBEDDED", raising=False)
    monkeypatch.setenv("STREAMSCORE_TEST_NO_DOCKER", "1")
    lines: list[str] = []
    refusing = guarded_cluster.url(password="")
    with engines.postgres_admin_url(lines.append, local=refusing) as url:
        assert f":{guarded_cluster.port}/" not in url
        assert await select_one(url) == 1
    assert len(lines) == 1
    assert lines[0].startswith("postgres: a private initdb cluster")
    assert f"127.0.0.1:{guarded_cluster.port} answers but refuses us" in lines[0]
    assert "password authentication failed" in lines[0]


async def test_a_url_with_a_password_in_the_environment_is_used_as_given(
    guarded_cluster: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMSCORE_TEST_DATABASE_URL", guarded_cluster.url())
    lines: list[str] = []
    with engines.postgres_admin_url(lines.append) as url:
        assert url == guarded_cluster.url()
        assert await select_one(url) == 1
    assert lines == ["postgres: STREAMSCORE_TEST_DATABASE_URL (set in the environment)"]
    assert SECRET not in lines[0]

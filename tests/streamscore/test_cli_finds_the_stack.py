"""Every service-backed command finds the running dev stack one way, and says what it could not reach."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from ingest_api.auth.credentials import create_api_key
from store.users import use_active_key
from streamscore.dev import admin_key
from streamscore.embedded import free_port
from tests.helpers.stack import CLI, _dev_env


def _pretend_dev_runs(home: Path, database_url: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "api-url").write_text(f"http://127.0.0.1:{free_port()}\n")
    (home / "database-url").write_text(database_url + "\n")


def _run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env={**_dev_env(home), **env}, capture_output=True, text=True,
                          timeout=120, cwd=home.parent)


async def test_api_keys_list_uses_the_running_dev_stack_s_database(database_url: str, tmp_path: Path) -> None:
    from infra.database import create_engine, create_sessionmaker
    from infra.settings import DatabaseSettings

    engine = create_engine(DatabaseSettings(database_url=database_url))
    async with create_sessionmaker(engine)() as session:
        await create_api_key(session, "only-in-the-dev-database", ["read"])
        await session.commit()
    await engine.dispose()
    home = tmp_path / ".streamscore"
    _pretend_dev_runs(home, database_url)
    done = await asyncio.to_thread(_run, home, "api-keys", "list")
    assert done.returncode == 0, done.stderr
    assert "only-in-the-dev-database" in done.stdout


def test_an_unreachable_database_is_one_line_naming_where_it_came_from(tmp_path: Path) -> None:
    home = tmp_path / ".streamscore"
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/streamscore"
    _pretend_dev_runs(home, dead)
    done = _run(home, "api-keys", "list")
    assert done.returncode == 1
    assert f"cannot reach the database at {dead}" in done.stderr
    assert str(home / "database-url") in done.stderr
    assert "Traceback" not in done.stderr + done.stdout and len(done.stderr.splitlines()) == 1


def test_without_a_dev_stack_the_environment_is_used_and_named(tmp_path: Path) -> None:
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x"
    done = _run(tmp_path / "none", "api-keys", "list", STREAMSCORE_DATABASE_URL=dead)
    assert done.returncode == 1
    assert f"cannot reach the database at {dead} (from STREAMSCORE_DATABASE_URL)" in done.stderr
    assert "streamscore dev" in done.stderr and "Traceback" not in done.stderr


def test_input_errors_exit_2_everywhere(tmp_path: Path) -> None:
    home = tmp_path / "none"
    assert _run(home, "batch", "submit", str(tmp_path / "missing.csv")).returncode == 2
    assert _run(home, "api-keys", "create", "--name", "x", "--scopes", "bogus",
                STREAMSCORE_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/x").returncode == 2
    assert _run(home, "batch", "no-such-command").returncode == 2
    assert _run(home, "models", "activate", "no-such-version").returncode == 2


async def test_dev_reuses_its_admin_key_while_the_database_accepts_it(database_url: str) -> None:
    first = await admin_key(database_url, "")
    assert await admin_key(database_url, first) == first
    from infra.database import create_engine, create_sessionmaker
    from infra.settings import DatabaseSettings
    from ingest_api.auth.credentials import hash_api_key

    engine = create_engine(DatabaseSettings(database_url=database_url))
    async with create_sessionmaker(engine)() as session:
        assert await use_active_key(session, hash_api_key(first)) is not None
    await engine.dispose()
    fresh = await admin_key(database_url, "ssk_unknown-key")
    assert fresh != first and fresh.startswith("ssk_")


def test_no_dev_files_means_noadmin_key_is_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamscore.client import resolve_api_key

    home = tmp_path / ".streamscore"
    home.mkdir()
    (home / "api-key").write_text("ssk_kept-for-the-next-run\n")
    monkeypatch.setenv("STREAMSCORE_DEV_HOME", str(home))
    monkeypatch.delenv("STREAMSCORE_API_KEY", raising=False)
    assert resolve_api_key(None) is None  # dev is not running: the kept key stays home
    (home / "api-url").write_text("http://127.0.0.1:1\n")
    assert resolve_api_key(None) == "ssk_kept-for-the-next-run"

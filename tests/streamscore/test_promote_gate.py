"""`streamscore replay` prints its figures; `models promote V --require-replay` refuses without a recent
passing replay of V, and promotes with one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
import typer
from typer.testing import CliRunner

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from models.cli import register as register_models
from models.engine import InferenceEngine
from models.registry import Registry
from store import replay as stored
from streamscore.replay import register as register_replay
from tests.helpers.api import dataset_rows
from tests.helpers.feature_log import serve


async def _replay(database_url: str, version: str, rows: int, top3: float) -> None:
    database = create_engine(DatabaseSettings(database_url=database_url, database_pool_size=1))
    replay_id = uuid4()
    try:
        async with create_sessionmaker(database)() as session, session.begin():
            now = datetime.now(UTC)
            await stored.start_replay(session, replay_id, version, now - timedelta(days=1), now, "test")
        async with create_sessionmaker(database)() as session, session.begin():
            await stored.finish_replay(session, replay_id, status="completed", rows=rows, top3_agreement=top3,
                                       propensity_spearman=0.95, segment_agreement=0.97)
    finally:
        await database.dispose()


async def test_promote_requires_a_recent_replay_that_passes(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMSCORE_DATABASE_URL", database_url)
    monkeypatch.setenv("STREAMSCORE_DEV_HOME", str(tmp_path))  # pointers of this test only
    registry = Registry()
    candidate = next(v for v in registry.versions() if v != registry.active_version())
    app = typer.Typer()
    register_models(app)
    register_replay(app)

    def promote() -> tuple[int, str]:
        result = CliRunner().invoke(app, ["models", "promote", candidate, "--require-replay"])
        return result.exit_code, result.output

    none = await asyncio.to_thread(promote)
    await _replay(database_url, candidate, rows=5000, top3=0.2)
    weak = await asyncio.to_thread(promote)
    await _replay(database_url, candidate, rows=5000, top3=0.9)
    passed = await asyncio.to_thread(promote)

    assert none[0] == 2 and "no completed replay" in none[1]
    assert weak[0] == 2 and "top-3 agreement 0.2000 < 0.5" in weak[1]
    assert passed == (0, f"active version: {candidate} (activated)\n")
    assert Registry().active_version() == candidate


async def test_the_replay_command_reports_its_figures(
    database_url: str, inference_engine: InferenceEngine, monkeypatch: pytest.MonkeyPatch, unique_id: str
) -> None:
    database = create_engine(DatabaseSettings(database_url=database_url, database_pool_size=1))
    try:
        customers = [f"c{unique_id}-{i}" for i in range(200)]
        await serve(create_sessionmaker(database), inference_engine, customers, dataset_rows(200), largest=80)
    finally:
        await database.dispose()
    monkeypatch.setenv("STREAMSCORE_DATABASE_URL", database_url)
    app = typer.Typer()
    register_replay(app)
    app.command("noop")(lambda: None)  # two commands: `replay` stays a subcommand

    result = await asyncio.to_thread(CliRunner().invoke, app, [
        "replay", "--version", inference_engine.model_version, "--since", "1h", "--no-publish"])

    assert result.exit_code == 0, result.output
    version = inference_engine.model_version
    assert f"replayed 200 prediction(s) with {version}: top-3 agreement 1.0000" in result.output
    assert "identical 1.0000" in result.output

"""`streamscore replay`: re-score a window of the feature log with a model version; the promote gate."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import typer
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import numpy as np
    from aiokafka import AIOKafkaProducer

    from ingest_api.console.replay_runner import Send
    from models.engine import InferenceEngine, ScoreBatch

_RELATIVE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class ReplayGateSettings(BaseSettings):
    """What `models promote --require-replay` demands of a version's latest replay (STREAMSCORE_ prefix)."""

    model_config = SettingsConfigDict(env_prefix="STREAMSCORE_", extra="ignore")

    replay_recent_hours: float = Field(default=168.0, gt=0, description="The replay finished this recently.")
    replay_min_rows: int = Field(default=1000, ge=1, description="Rows the replay re-scored, at least.")
    replay_min_top3_agreement: float = Field(default=0.5, ge=0, le=1)
    replay_min_propensity_spearman: float = Field(default=0.8, ge=-1, le=1)
    replay_min_segment_agreement: float = Field(default=0.8, ge=0, le=1)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An aware instant: ISO 8601 (naive means UTC), `now`, or an age before now like `30m`, `24h`, `7d`."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if value == "now":
        return now
    if match := _RELATIVE.fullmatch(value):
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise typer.BadParameter(f"{text!r} is neither ISO 8601 nor an age like 24h or 7d") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def scorer_score(engine: InferenceEngine) -> Callable[[np.ndarray], ScoreBatch]:
    """The scorer's own micro-batch call (scorer.scoring.score_matrix); a batch it had to split row by row
    cannot be compared as a batch, so it fails the replay."""
    from scorer.scoring import score_matrix

    def score(matrix: np.ndarray) -> ScoreBatch:
        result = score_matrix(engine, matrix)
        if isinstance(result, list):
            raise RuntimeError("the engine failed on this micro-batch as a whole")
        return result

    return score


def keyed_send(producer: AIOKafkaProducer, topic: str) -> Send:
    """Publish through the scorer's per-partition record batches (~2 µs a message against ~12 µs for one
    producer.send each), then wait for every ack."""
    from scorer.handlers import send_keyed_batches

    async def send(messages: Sequence[tuple[bytes, bytes]]) -> None:
        pending = await send_keyed_batches(producer, topic, [(i, k, v) for i, (k, v) in enumerate(messages)])
        for ack, _ in pending:
            await ack

    return send


async def replay_window(
    version: str, since: datetime, until: datetime, publish: bool, registry: str | None,
    progress: Callable[[int], None] | None = None, total: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Load the version, count the window, run the replay (publishing unless told not to); its figures."""
    from pathlib import Path

    from aiokafka import AIOKafkaProducer

    from infra.database import create_engine, create_sessionmaker
    from infra.kafka import ensure_topics, producer_options, topic_name
    from infra.kafka_connection import connection_options
    from infra.settings import DatabaseSettings, KafkaSettings
    from ingest_api.console.replay_runner import run_replay
    from models.engine import InferenceEngine
    from schemas import topics
    from store.replay import count_logged

    engine = await asyncio.to_thread(InferenceEngine.pinned, version, Path(registry) if registry else None)
    database = create_engine(DatabaseSettings())
    producer: AIOKafkaProducer | None = None
    try:
        sessionmaker = create_sessionmaker(database)
        async with sessionmaker() as session:
            count = await count_logged(session, since, until)
        if total is not None:
            total(count)
        send = None
        if publish:
            kafka = KafkaSettings()
            await ensure_topics(kafka, (topics.PREDICTIONS_REPLAY,))
            producer = AIOKafkaProducer(**connection_options(kafka), **producer_options(kafka))
            await producer.start()
            send = keyed_send(producer, topic_name(kafka, topics.PREDICTIONS_REPLAY))
        figures = await run_replay(sessionmaker, scorer_score(engine), version, since, until, uuid4(), send,
                                   "cli", progress or (lambda rows: None))
        return figures
    finally:
        if producer is not None:
            await producer.stop()
        await database.dispose()


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _outcome_line(name: str, side: dict[str, Any]) -> str:
    top = side["top20_buyers"]
    return (f"  {name:<9} AUC {_figure(side['auc'])}, top-20 % buyers {top:g} of {side['buyers']}, "
            f"HR@3 {_figure(side['hr3'])} over {side['trials']} purchase(s); {side['labelled']} labelled, "
            f"{side['pending']} pending")


def replay(
    version: str = typer.Option(..., "--version", help="Model version to re-score the window with."),
    since: str = typer.Option(..., "--since", help="Window start: ISO 8601, or an age such as 24h or 7d."),
    until: str = typer.Option("now", "--until", help="Window end (exclusive): ISO 8601, an age, or now."),
    publish: bool = typer.Option(True, help="Also publish them to predictions-replay.v1."),
    registry: str | None = typer.Option(None, help="Registry directory (default: the configured one)."),
) -> None:
    """Re-score the logged features of [since, until) with VERSION and compare with what was served.

    Replayed predictions go to the predictions_replay table (and predictions-replay.v1), never to the
    served predictions or the cache. Prints top-3 agreement, propensity rank correlation (Spearman) and
    segment agreement, then the outcome figures (AUC, top-20 % buyers, HR@3) of the served and the
    replayed predictions on the same customers.

    [bold]Examples[/]

      streamscore replay --version v20261201-231012 --since 24h
      streamscore replay --version v20261201-231012 --since 2026-12-01T00:00Z --until 2026-12-02T00:00Z
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    start, end = parse_time(since), parse_time(until)
    if end <= start:
        typer.echo("error: --until must be later than --since", err=True)
        raise typer.Exit(2)
    with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("replay", total=None)
        try:
            figures = asyncio.run(replay_window(
                version, start, end, publish, registry,
                progress=lambda rows: bar.advance(task, rows),
                total=lambda rows: bar.update(task, total=rows),
            ))
        except KeyError as error:
            typer.echo(f"error: {error.args[0]}", err=True)
            raise typer.Exit(2) from error
    typer.echo(
        f"replayed {figures['rows']} prediction(s) with {version}: top-3 agreement "
        f"{_figure(figures['top3_agreement'])} (same set {_figure(figures['top3_set_agreement'])}), "
        f"propensity Spearman {_figure(figures['propensity_spearman'])}, segment agreement "
        f"{_figure(figures['segment_agreement'])}, identical {_figure(figures['exact_agreement'])}; "
        f"served by {figures['served_versions']}"
    )
    outcomes = figures["outcomes"]
    typer.echo(f"outcomes on the same customers (horizon {outcomes['horizon_seconds'] / 86400:g} d, "
               f"as of {outcomes['as_of']}):")
    typer.echo(_outcome_line("served", outcomes["served"]))
    typer.echo(_outcome_line("replayed", outcomes["replayed"]))


def replay_gate(version: str) -> str | None:
    """Why `version` may not be promoted under --require-replay, or None when its latest replay passes."""
    from infra.database import create_engine, create_sessionmaker
    from infra.settings import DatabaseSettings
    from store.replay import latest_replay

    gate = ReplayGateSettings()

    async def latest() -> Any:
        database = create_engine(DatabaseSettings())
        try:
            async with create_sessionmaker(database)() as session:
                cutoff = datetime.now(UTC) - timedelta(hours=gate.replay_recent_hours)
                return await latest_replay(session, version, cutoff)
        finally:
            await database.dispose()

    found = asyncio.run(latest())
    if found is None:
        return f"no completed replay of it in the last {gate.replay_recent_hours:g} h (streamscore replay)"
    checks = [
        ("rows", found.rows, gate.replay_min_rows),
        ("top-3 agreement", found.top3_agreement, gate.replay_min_top3_agreement),
        ("propensity Spearman", found.propensity_spearman, gate.replay_min_propensity_spearman),
        ("segment agreement", found.segment_agreement, gate.replay_min_segment_agreement),
    ]
    failed = [f"{name} {_figure(value) if name != 'rows' else value} < {floor}"
              for name, value, floor in checks if value is None or value < floor]
    if failed:
        return f"replay {found.id} does not pass: " + ", ".join(failed)
    return None


def register(app: typer.Typer) -> None:
    """Attach `replay` and give `models promote --require-replay` its check."""
    from models.cli import REPLAY_GATE, STORE_EXPORT
    from streamscore.train_store import export_training_set

    app.command("replay")(replay)
    REPLAY_GATE[:] = [replay_gate]
    STORE_EXPORT[:] = [export_training_set]

"""One replay run, shared by `POST /api/v1/replays` and `streamscore replay`: log pages in, replayed rows
to predictions_replay and predictions-replay.v1 (never to predictions or Redis), figures to `replays`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingest_api.console.quality import QualitySettings, figures
from ingest_api.publisher import AckedPublisher
from models.engine import ScoreBatch
from models.replay import Agreement, Score, replay_pages, score_runs
from schemas.features import PRODUCTS
from schemas.wire import EventIds, predictions_json, utc_now
from store import replay as stored
from store.outcome_join import Joined
from store.replay import LoggedPage

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)
Send = Callable[[Sequence[tuple[bytes, bytes]]], Awaitable[None]]
"""Publish (key, value) messages to predictions-replay.v1 and wait for every ack."""
_HEADS = [(p.product_id, p.name) for p in PRODUCTS]


def replayed_records(
    replay_id: UUID, page: LoggedPage, batch: ScoreBatch, replayed_at: datetime
) -> list[tuple[Any, ...]]:
    """predictions_replay rows (store.replay.REPLAY_COLUMNS order) of one replayed page."""
    picks, probabilities = batch.product_index.tolist(), batch.product_probability.tolist()
    propensity, scores = batch.propensity.tolist(), batch.segment_score.tolist()
    labels = batch.segment_label.tolist()
    version = batch.model_version
    return [
        (replay_id, page.event_ids[i], page.customer_ids[i], version, page.sources[i], page.batch_ids[i],
         orjson.dumps([{"product_id": _HEADS[k][0], "name": _HEADS[k][1], "probability": p}
                       for k, p in zip(picks[i], probabilities[i], strict=True)]).decode(),
         propensity[i], labels[i], scores[i], replayed_at)
        for i in range(len(page))
    ]


def replayed_messages(
    page: LoggedPage, batch: ScoreBatch, replayed_at: datetime
) -> list[tuple[bytes, bytes]]:
    """predictions-replay.v1 messages of one replayed page: the Prediction contract, keyed by customer."""
    events = [
        EventIds(str(e), c, s, None if b is None else str(b))
        for e, c, s, b in zip(page.event_ids, page.customer_ids, page.sources, page.batch_ids, strict=True)
    ]
    payloads = predictions_json(
        events, batch.model_version, batch.product_index, batch.product_probability, batch.propensity,
        batch.segment_score, batch.segment_label.tolist(), replayed_at,
    )
    return [(event.customer_id.encode(), payload) for event, payload in zip(events, payloads, strict=True)]


def outcome_figures(joined: Joined) -> dict[str, Any]:
    """The headline live-quality figures of one side of a replay (models.live_quality through
    ingest_api.console.quality.figures)."""
    document = figures(joined)
    propensity, recommender = document["propensity"], document["recommender"]
    return {
        "predictions": document["predictions"],
        "labelled": document["labelled"],
        "pending": document["pending"],
        "buyers": propensity["buyers"],
        "auc": propensity["auc"],
        "top20_buyers": propensity["top20_buyers"],
        "top20_share": propensity["top20_share"],
        "hr3": recommender["hr3"],
        "trials": recommender["pairs"],
    }


async def replay_outcomes(
    sessionmaker: async_sessionmaker[AsyncSession], replay_id: UUID, since: datetime, until: datetime,
    horizon: timedelta, as_of: datetime,
) -> dict[str, Any]:
    """The outcome figures of a replay's served and replayed predictions on the same rows (same labels)."""
    async with sessionmaker() as session, session.begin():
        served, replayed = await stored.join_replay(session, replay_id, since, until, horizon, as_of)
    return {"as_of": as_of.isoformat(), "horizon_seconds": horizon.total_seconds(),
            "served": outcome_figures(served), "replayed": outcome_figures(replayed)}


async def run_replay(
    sessionmaker: async_sessionmaker[AsyncSession],
    score: Score,
    version: str,
    since: datetime,
    until: datetime,
    replay_id: UUID,
    send: Send | None = None,
    requested_by: str | None = None,
    progress: Callable[[int], None] = lambda rows: None,
    horizon: timedelta | None = None,
) -> dict[str, Any]:
    """Replay [since, until) through `score` (one model version); the `replays` row's figures.

    The replay is recorded as running first, then completed with its figures (the outcome figures of both
    sides as of its end, under `horizon`, default the configured outcome horizon), or failed with the error.
    """
    horizon = horizon or QualitySettings().horizon
    async with sessionmaker() as session, session.begin():
        await stored.start_replay(session, replay_id, version, since, until, requested_by)
    replayed_at = utc_now()

    async def fetch(cursor: tuple[datetime, int], limit: int) -> LoggedPage:
        async with sessionmaker() as session:
            return await stored.logged_page(session, since, until, cursor, limit)

    async def copy(records: list[tuple[Any, ...]]) -> None:
        async with sessionmaker() as session, session.begin():
            await stored.store_replayed(session, records)

    async def write(page: LoggedPage, batch: ScoreBatch) -> None:
        copied = copy(replayed_records(replay_id, page, batch, replayed_at))
        if send is None:
            await copied
        else:  # Postgres and the broker take theirs at the same time
            await asyncio.gather(copied, send(replayed_messages(page, batch, replayed_at)))

    async def threaded(features: Any, runs: Any) -> ScoreBatch:
        return await asyncio.to_thread(score_runs, score, features, runs)

    agreement = Agreement()
    try:
        async for running in replay_pages(fetch, threaded, write, (since, 0), progress=progress):
            agreement = running
        outcomes = await replay_outcomes(sessionmaker, replay_id, since, until, horizon, utc_now())
    except Exception as error:
        async with sessionmaker() as session, session.begin():
            await stored.finish_replay(session, replay_id, status="failed", rows=agreement.rows,
                                       error=f"{type(error).__name__}: {error}"[:2000])
        raise
    figures = {**agreement.figures(), "outcomes": outcomes}
    async with sessionmaker() as session, session.begin():
        await stored.finish_replay(session, replay_id, status="completed", **figures)
    log.info("replay completed", extra={"replay_id": str(replay_id), "version": version, **figures})
    return figures


def producer_send(producer: AIOKafkaProducer, topic: str) -> Send:
    """A Send over an aiokafka producer: every message queued, then every ack awaited."""

    async def send(messages: Sequence[tuple[bytes, bytes]]) -> None:
        publisher = AckedPublisher(producer, topic)
        await publisher.send_many(messages)
        await publisher.wait_acked()

    return send

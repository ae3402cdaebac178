"""Replays: a window of the feature log read in pages, replayed rows written aside, figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.feature_log import stored_matrix
from store.copying import copy_records
from store.outcome_join import LOGGED, Joined, Source, join_source
from store.tables import Replay

# Pages walk (scored_at, id): a micro-batch's rows share one scored_at and are consecutive in it, so a
# replay can score them in one engine call as the scorer did (see models/replay.py). The BRIN index on
# scored_at (migration 0008) bounds the scan to the window.
_PAGE = text(
    """
SELECT id, event_id, customer_id, model_version, source, batch_id, scored_at, features,
       recommendations->0->>'product_id', recommendations->1->>'product_id',
       recommendations->2->>'product_id',
       CAST(recommendations->0->>'probability' AS float8), CAST(recommendations->1->>'probability' AS float8),
       CAST(recommendations->2->>'probability' AS float8),
       propensity, segment_label, segment_score
FROM predictions
WHERE scored_at >= :since AND scored_at < :until AND features IS NOT NULL
  AND (scored_at, id) > (:after_at, :after_id)
ORDER BY scored_at, id
LIMIT :limit
"""
)
_COUNT = text(
    "SELECT count(*) FROM predictions "
    "WHERE scored_at >= :since AND scored_at < :until AND features IS NOT NULL"
)
# A replay's served and replayed predictions meet the outcomes through the one join rule, on the same rows
# (the replay's events) with the same scored_at: only their propensities and top 3 differ, so both sides get
# the same labels and the figures compare the versions on the same customers.
_REPLAYED_ROWS = """
    SELECT 0 AS tbl, p.id, p.scored_at, {side}.propensity
    FROM predictions_replay r JOIN predictions p USING (event_id)
    WHERE r.replay_id = :replay_id AND p.scored_at >= :since AND p.scored_at < :until"""
SERVED = Source(LOGGED, _REPLAYED_ROWS.format(side="p"))
"""The served predictions a replay re-scored."""
REPLAYED = Source(
    """
    SELECT 0 AS tbl, p.id, p.customer_id, p.scored_at,
           coalesce(r.recommendations, p.recommendations) AS recommendations
    FROM predictions p LEFT JOIN predictions_replay r ON r.replay_id = :replay_id AND r.event_id = p.event_id
    WHERE p.scored_at >= :low AND p.scored_at < :high AND p.features IS NOT NULL""",
    _REPLAYED_ROWS.format(side="r"),
)
"""The same rows with the replay's outputs in place of the served ones."""
REPLAY_COLUMNS = (
    "replay_id", "event_id", "customer_id", "model_version", "source", "batch_id", "recommendations",
    "propensity", "segment_label", "segment_score", "scored_at",
)


@dataclass(frozen=True)
class LoggedPage:
    """Logged predictions of a window, in (scored_at, id) order: their ids, features and served outputs."""

    ids: list[int]
    event_ids: list[UUID]
    customer_ids: list[str]
    served_versions: list[str]
    sources: list[str]
    batch_ids: list[UUID | None]
    scored_at: list[datetime]
    features: np.ndarray  # (n, 86) int64
    top3: list[tuple[str, str, str]]  # served product ids, best first
    probabilities: np.ndarray  # (n, 3) served calibrated probabilities
    propensity: np.ndarray
    segment_label: list[str]
    segment_score: np.ndarray

    def __len__(self) -> int:
        """Rows in the page."""
        return len(self.ids)

    def head(self, count: int) -> LoggedPage:
        """The first `count` rows."""
        return LoggedPage(**{
            name: value[:count] for name, value in self.__dict__.items()
        })


async def count_logged(session: AsyncSession, since: datetime, until: datetime) -> int:
    """Predictions with logged features scored in [since, until)."""
    return int((await session.execute(_COUNT, {"since": since, "until": until})).scalar_one())


async def logged_page(
    session: AsyncSession, since: datetime, until: datetime, after: tuple[datetime, int], limit: int
) -> LoggedPage:
    """The next `limit` logged predictions of [since, until) after the (scored_at, id) cursor."""
    params = {"since": since, "until": until, "after_at": after[0], "after_id": after[1], "limit": limit}
    rows: Sequence[Any] = (await session.execute(_PAGE, params)).all()
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [() for _ in range(17)]
    return LoggedPage(
        ids=list(columns[0]),
        event_ids=list(columns[1]),
        customer_ids=list(columns[2]),
        served_versions=list(columns[3]),
        sources=list(columns[4]),
        batch_ids=list(columns[5]),
        scored_at=list(columns[6]),
        features=stored_matrix(list(columns[7])),
        top3=list(zip(columns[8], columns[9], columns[10], strict=True)),
        probabilities=np.array(list(zip(columns[11], columns[12], columns[13], strict=True)),
                               dtype=np.float64).reshape(len(rows), 3),
        propensity=np.array(columns[14], dtype=np.float64),
        segment_label=list(columns[15]),
        segment_score=np.array(columns[16], dtype=np.float64),
    )


async def join_replay(
    session: AsyncSession, replay_id: UUID, since: datetime, until: datetime, horizon: timedelta,
    as_of: datetime,
) -> tuple[Joined, Joined]:
    """(served, replayed) predictions of a replay, each labelled by the outcome join as of `as_of`."""
    served = await join_source(session, SERVED, since, until, horizon, as_of, replay_id=replay_id)
    replayed = await join_source(session, REPLAYED, since, until, horizon, as_of, replay_id=replay_id)
    return served, replayed


async def start_replay(
    session: AsyncSession, replay_id: UUID, version: str, since: datetime, until: datetime,
    requested_by: str | None,
) -> None:
    """Record a replay as running."""
    session.add(Replay(id=replay_id, model_version=version, since=since, until=until, status="running",
                       requested_by=requested_by))


async def store_replayed(session: AsyncSession, records: Sequence[tuple[Any, ...]]) -> None:
    """COPY replayed predictions (tuples in REPLAY_COLUMNS order) into predictions_replay."""
    if records:
        await copy_records(session, "predictions_replay", records, REPLAY_COLUMNS)


async def finish_replay(session: AsyncSession, replay_id: UUID, **figures: Any) -> None:
    """Record a replay's outcome: status, rows and agreement figures, or its error."""
    await session.execute(
        update(Replay).where(Replay.id == replay_id).values(finished_at=text("now()"), **figures)
    )


async def get_replay(session: AsyncSession, replay_id: UUID) -> Replay | None:
    """One replay by id."""
    return await session.get(Replay, replay_id)


async def latest_replay(session: AsyncSession, version: str, finished_after: datetime) -> Replay | None:
    """The newest completed replay of `version` finished after the given time."""
    result = await session.execute(
        select(Replay)
        .where(Replay.model_version == version, Replay.status == "completed",
               Replay.finished_at >= finished_after)
        .order_by(Replay.finished_at.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


def replay_summary(replay: Replay) -> dict[str, Any]:
    """A replay as the API and the CLI show it."""
    return {
        "replay_id": replay.id,
        "model_version": replay.model_version,
        "since": replay.since,
        "until": replay.until,
        "status": replay.status,
        "rows": replay.rows,
        "exact_agreement": replay.exact_agreement,
        "top3_agreement": replay.top3_agreement,
        "top3_set_agreement": replay.top3_set_agreement,
        "propensity_spearman": replay.propensity_spearman,
        "segment_agreement": replay.segment_agreement,
        "served_versions": replay.served_versions,
        "outcomes": replay.outcomes,
        "requested_by": replay.requested_by,
        "error": replay.error,
        "started_at": replay.started_at,
        "finished_at": replay.finished_at,
    }

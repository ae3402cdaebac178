"""Training rows from the feature log: each customer's latest logged features of a window, and their
labels from outcomes through the one outcome join."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.feature_log import stored_matrix
from store.outcome_join import LOGGED, Joined, Source, join_source

# One row per customer, its latest logged prediction (LATEST_ORDER) of the window; rows in customer_id
# order (bytewise, COLLATE "C"), so the set and its order do not depend on how the events were partitioned.
_LATEST = """
SELECT DISTINCT ON (customer_id) customer_id, id, scored_at, propensity, features
FROM predictions
WHERE scored_at >= :since AND scored_at < :until AND features IS NOT NULL
ORDER BY customer_id, scored_at DESC, id DESC
"""
_LATEST_LOGGED = text(_LATEST)
LATEST = Source(LOGGED, f"SELECT 0 AS tbl, id, scored_at, propensity FROM ({_LATEST}) latest")
"""The training rows as an outcome-join window (candidates: every logged served prediction)."""


async def latest_logged_features(
    session: AsyncSession, since: datetime, until: datetime
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(customer ids, prediction ids, (n, 86) features) of each customer's latest logged prediction in
    [since, until)."""
    rows = (await session.execute(_LATEST_LOGGED, {"since": since, "until": until})).all()
    ids = np.array([row[1] for row in rows], dtype=np.int64)
    return [row[0] for row in rows], ids, stored_matrix([row[4] for row in rows])


async def join_latest(
    session: AsyncSession, since: datetime, until: datetime, horizon: timedelta, as_of: datetime
) -> Joined:
    """The training rows of [since, until) labelled by the outcome join as of `as_of` (with their ids)."""
    return await join_source(session, LATEST, since, until, horizon, as_of)

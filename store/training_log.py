"""Training rows from the feature log: each customer's latest logged features of a window."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.feature_log import stored_matrix

# One row per customer, its latest logged prediction (LATEST_ORDER) of the window; rows in customer_id
# order (bytewise, COLLATE "C"), so the set and its order do not depend on how the events were partitioned.
_LATEST_LOGGED = text(
    """
SELECT DISTINCT ON (customer_id) customer_id, features
FROM predictions
WHERE scored_at >= :since AND scored_at < :until AND features IS NOT NULL
ORDER BY customer_id, scored_at DESC, id DESC
"""
)


async def latest_logged_features(
    session: AsyncSession, since: datetime, until: datetime
) -> tuple[list[str], np.ndarray]:
    """(customer ids, (n, 86) features) of each customer's latest logged prediction in [since, until)."""
    rows = (await session.execute(_LATEST_LOGGED, {"since": since, "until": until})).all()
    return [row[0] for row in rows], stored_matrix([row[1] for row in rows])

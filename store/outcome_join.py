"""The one owner of the outcome join: which prediction each outcome is attributed to, and each label.

Rule (docs/outcomes.md). For a model version V and horizon H:

* An outcome (customer c bought product x at time t) is attributed, per version, to c's latest prediction
  of V (served `predictions` and `predictions_shadow` alike; latest = greatest scored_at, then id) scored
  strictly before t and no longer than H before it (t - H <= scored_at < t). With none, it is unmatched.
* A prediction is positive for propensity when a caravan outcome is attributed to it; superseded when c
  bought a caravan within its horizon (scored_at, scored_at + H] but a later prediction took the outcome;
  negative when its horizon closed (scored_at + H < as_of) with no caravan bought in it; else pending.
* Each distinct (prediction, product bought) pair attributed is one recommender trial: a hit when the
  product is in the prediction's top 3.

Only stored rows and `as_of` enter: redelivered, replayed or out-of-order outcomes (stored once per
outcome_id) cannot change a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.outcomes import CARAVAN

_LATEST = """
    (SELECT {tag} AS tbl, id, scored_at FROM {table} p
     WHERE p.customer_id = o.customer_id AND p.model_version = :version
       AND p.scored_at < o.occurred_at AND p.scored_at >= o.occurred_at - :horizon
     ORDER BY scored_at DESC, id DESC LIMIT 1)"""
_WINDOW = """
    SELECT {tag} AS tbl, id, customer_id, scored_at, propensity, recommendations FROM {table}
    WHERE model_version = :version AND scored_at >= :since AND scored_at < :until"""
_TABLES = (("0", "predictions"), ("1", "predictions_shadow"))

_JOIN = text(f"""
WITH win AS MATERIALIZED ({" UNION ALL ".join(_WINDOW.format(tag=t, table=n) for t, n in _TABLES)}),
relevant AS MATERIALIZED (
    SELECT customer_id, product_id, occurred_at FROM outcomes
    WHERE occurred_at >= :since AND occurred_at <= :until + :horizon
),
attributed AS MATERIALIZED (
    SELECT o.customer_id, o.product_id, o.occurred_at, l.tbl, l.id
    FROM relevant o
    LEFT JOIN LATERAL (
        SELECT tbl, id FROM ({" UNION ALL ".join(_LATEST.format(tag=t, table=n) for t, n in _TABLES)}) c
        ORDER BY scored_at DESC, tbl DESC, id DESC LIMIT 1
    ) l ON true
),
pairs AS (
    SELECT DISTINCT a.tbl, a.id, a.product_id FROM attributed a WHERE a.id IS NOT NULL
),
positives AS (
    SELECT tbl, id FROM pairs WHERE product_id = :caravan
),
labels AS (
    SELECT w.propensity, CAST(extract(epoch FROM w.scored_at) AS float8) AS scored,
           CASE WHEN EXISTS (SELECT 1 FROM positives x WHERE x.tbl = w.tbl AND x.id = w.id) THEN 1
                WHEN EXISTS (SELECT 1 FROM relevant o WHERE o.customer_id = w.customer_id
                             AND o.product_id = :caravan AND o.occurred_at > w.scored_at
                             AND o.occurred_at <= w.scored_at + :horizon) THEN -2
                WHEN w.scored_at + :horizon < :as_of THEN 0
                ELSE -1 END AS status
    FROM win w
),
trials AS (
    SELECT x.product_id, CAST(extract(epoch FROM w.scored_at) AS float8) AS scored,
           w.recommendations @> jsonb_build_array(jsonb_build_object('product_id', x.product_id)) AS hit
    FROM pairs x JOIN win w ON w.tbl = x.tbl AND w.id = x.id
)
SELECT l.propensity, l.scored, l.status, t.product, t.scored_trial, t.hit, u.unmatched
FROM (SELECT array_agg(propensity) AS propensity, array_agg(scored) AS scored, array_agg(status) AS status
      FROM labels) l
CROSS JOIN (SELECT array_agg(product_id) AS product, array_agg(scored) AS scored_trial, array_agg(hit) AS hit
            FROM trials) t
CROSS JOIN (SELECT count(*) AS unmatched FROM attributed
            WHERE id IS NULL AND occurred_at < :until) u
""")


@dataclass(frozen=True)
class Joined:
    """One version's predictions in a window, labelled, and its attributed recommender trials."""

    propensity: np.ndarray
    scored: np.ndarray  # epoch seconds
    status: np.ndarray  # models.live_quality POSITIVE / NEGATIVE / PENDING / SUPERSEDED
    trial_products: list[str]
    trial_scored: np.ndarray
    trial_hits: np.ndarray
    unmatched: int


async def join_outcomes(
    session: AsyncSession, version: str, since: datetime, until: datetime, horizon: timedelta,
    as_of: datetime,
) -> Joined:
    """Label the version's predictions scored in [since, until) as of `as_of` (one statement)."""
    row = (await session.execute(_JOIN, {
        "version": version, "since": since, "until": until, "horizon": horizon, "as_of": as_of,
        "caravan": CARAVAN,
    })).one()
    return Joined(
        propensity=np.asarray(row.propensity or [], dtype=np.float64),
        scored=np.asarray([float(v) for v in row.scored or []], dtype=np.float64),
        status=np.asarray(row.status or [], dtype=np.int64),
        trial_products=list(row.product or []),
        trial_scored=np.asarray([float(v) for v in row.scored_trial or []], dtype=np.float64),
        trial_hits=np.asarray(row.hit or [], dtype=bool),
        unmatched=int(row.unmatched),
    )

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

_SCORED = """
    SELECT {tag} AS tbl, id, customer_id, scored_at, propensity FROM {table}
    WHERE model_version = :version AND scored_at >= {low} AND scored_at < {high}"""
_TOP3 = """
    SELECT x.tbl, x.id, x.product_id, p.scored_at, p.recommendations
    FROM pairs x JOIN {table} p ON p.id = x.id
    WHERE x.tbl = {tag} AND p.scored_at >= :since AND p.scored_at < :until"""
_TABLES = (("0", "predictions"), ("1", "predictions_shadow"))
_LOW = "CAST(:since AS timestamptz) - CAST(:horizon AS interval)"
_HIGH = "CAST(:until AS timestamptz) + CAST(:horizon AS interval)"


def _union(template: str, **bounds: str) -> str:
    return " UNION ALL ".join(template.format(tag=tag, table=table, **bounds) for tag, table in _TABLES)


# Set-based: one hash join links outcomes to every earlier prediction of their customer within the horizon
# (a per-outcome index probe cost 18 µs each; a per-prediction EXISTS over the outcomes 165 s for 100,000).
# Predictions scored up to H before `since` and H after `until` take part, so attribution inside the window
# is the same as over all time.
_JOIN = text(f"""
WITH relevant AS MATERIALIZED (
    SELECT id AS oid, customer_id, product_id, occurred_at FROM outcomes
    WHERE occurred_at >= {_LOW} AND occurred_at <= {_HIGH}
),
candidates AS (
    SELECT c.* FROM ({_union(_SCORED, low=_LOW, high=_HIGH)}) c
    WHERE c.customer_id IN (SELECT customer_id FROM relevant)
),
links AS MATERIALIZED (  -- every (outcome, prediction scored in the horizon before it) pair
    SELECT o.oid, o.product_id, o.occurred_at, c.tbl, c.id, c.scored_at
    FROM relevant o JOIN candidates c ON c.customer_id = o.customer_id
    WHERE c.scored_at < o.occurred_at AND c.scored_at >= o.occurred_at - :horizon
),
attributed AS (
    SELECT DISTINCT ON (oid) oid, product_id, tbl, id FROM links
    ORDER BY oid, scored_at DESC, tbl DESC, id DESC
),
pairs AS MATERIALIZED (
    SELECT DISTINCT tbl, id, product_id FROM attributed
),
positives AS (
    SELECT DISTINCT tbl, id FROM pairs WHERE product_id = :caravan
),
covered AS (  -- predictions with a caravan bought within their horizon (whoever it was attributed to)
    SELECT DISTINCT tbl, id FROM links WHERE product_id = :caravan
),
labels AS (
    SELECT w.propensity, CAST(extract(epoch FROM w.scored_at) AS float8) AS scored,
           CASE WHEN pos.id IS NOT NULL THEN 1
                WHEN cov.id IS NOT NULL THEN -2
                WHEN w.scored_at + :horizon < :as_of THEN 0
                ELSE -1 END AS status
    FROM ({_union(_SCORED, low=":since", high=":until")}) w
    LEFT JOIN positives pos ON pos.tbl = w.tbl AND pos.id = w.id
    LEFT JOIN covered cov ON cov.tbl = w.tbl AND cov.id = w.id
),
trials AS (
    SELECT t.product_id, CAST(extract(epoch FROM t.scored_at) AS float8) AS scored,
           t.recommendations @> jsonb_build_array(jsonb_build_object('product_id', t.product_id)) AS hit
    FROM ({_union(_TOP3)}) t
)
SELECT l.propensity, l.scored, l.status, t.product, t.scored_trial, t.hit, u.unmatched
FROM (SELECT array_agg(propensity) AS propensity, array_agg(scored) AS scored, array_agg(status) AS status
      FROM labels) l
CROSS JOIN (SELECT array_agg(product_id) AS product, array_agg(scored) AS scored_trial, array_agg(hit) AS hit
            FROM trials) t
CROSS JOIN (SELECT count(*) AS unmatched FROM relevant o
            WHERE o.occurred_at >= :since AND o.occurred_at < :until
              AND NOT EXISTS (SELECT 1 FROM links k WHERE k.oid = o.oid)) u
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
        scored=np.asarray(row.scored or [], dtype=np.float64),
        status=np.asarray(row.status or [], dtype=np.int64),
        trial_products=list(row.product or []),
        trial_scored=np.asarray(row.scored_trial or [], dtype=np.float64),
        trial_hits=np.asarray(row.hit or [], dtype=bool),
        unmatched=int(row.unmatched),
    )

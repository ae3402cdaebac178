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

The rule reads its predictions from a Source: a version's (VERSION, the performance figures), or the
feature log's served stream (store/replay.py: replays and `train --from-store --labels outcomes`).

Only stored rows and `as_of` enter: redelivered, replayed or out-of-order outcomes (stored once per
outcome_id) cannot change a figure.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.outcomes import CARAVAN

_SCORED = """
    SELECT {tag} AS tbl, id, customer_id, scored_at, {extra} FROM {table}
    WHERE model_version = :version AND scored_at >= {low} AND scored_at < {high}"""
_TABLES = (("0", "predictions"), ("1", "predictions_shadow"))
_LOW = "CAST(:since AS timestamptz) - CAST(:horizon AS interval)"
_HIGH = "CAST(:until AS timestamptz) + CAST(:horizon AS interval)"


def _union(template: str, **fields: str) -> str:
    return " UNION ALL ".join(template.format(tag=tag, table=table, **fields) for tag, table in _TABLES)


@dataclass(frozen=True)
class Source:
    """The predictions a join labels, as SQL: `candidates` (tbl, id, customer_id, scored_at, recommendations)
    scored in [{low}, {high}) may take outcomes; `window` (tbl, id, scored_at, propensity) scored in
    [:since, :until) are labelled; `ids` returns the window's ids in the order of its labels."""

    candidates: str
    window: str
    ids: bool = False


VERSION = Source(_union(_SCORED, extra="recommendations", low="{low}", high="{high}"),
                 _union(_SCORED, extra="propensity", low=":since", high=":until"))
"""A model version's predictions, served and shadow alike (:version)."""
LOGGED = """
    SELECT '0' AS tbl, id, customer_id, scored_at, recommendations FROM predictions
    WHERE scored_at >= {low} AND scored_at < {high} AND features IS NOT NULL"""
"""Candidates of the feature log's served stream: every logged served prediction, whatever its version."""


# Set-based, two sequential scans of the version's predictions and no per-row subquery: one hash join links
# each outcome to every earlier prediction of its customer within the horizon (with the top-3 check, so no
# lookup goes back to the table), then the window's predictions meet the few the outcomes touched. (A
# correlated EXISTS per prediction took 165 s for 100,000 predictions; a probe per outcome 18 µs each.)
# Predictions scored up to H around the window take part, so attribution is the same as over all time
# (one scored before `since` can take an outcome, which is then neither unmatched nor the window's).
@functools.cache
def _join(source: Source) -> TextClause:
    ids = "string_agg(int8send(id), ''::bytea)" if source.ids else "NULL::bytea"
    return text(f"""
WITH relevant AS MATERIALIZED (
    SELECT id AS oid, customer_id, product_id, occurred_at FROM outcomes  -- earlier ones touch no window row
    WHERE occurred_at >= :since AND occurred_at <= {_HIGH}
),
links AS MATERIALIZED (  -- every (outcome, prediction scored in the horizon before it) pair
    SELECT o.oid, o.product_id, c.tbl, c.id, c.scored_at,
           c.recommendations @> jsonb_build_array(jsonb_build_object('product_id', o.product_id)) AS hit
    FROM relevant o
    JOIN ({source.candidates.format(low=_LOW, high=_HIGH)}) c
      ON c.customer_id = o.customer_id
     AND c.scored_at < o.occurred_at AND c.scored_at >= o.occurred_at - CAST(:horizon AS interval)
),
pairs AS MATERIALIZED (  -- each outcome's latest prediction, then one trial per (prediction, product)
    SELECT DISTINCT tbl, id, product_id, scored_at, hit FROM (
        SELECT DISTINCT ON (oid) oid, product_id, tbl, id, scored_at, hit FROM links
        ORDER BY oid, scored_at DESC, tbl DESC, id DESC
    ) attributed
),
marks AS (  -- 1: a caravan outcome is attributed to it; 0: a caravan was bought within its horizon
    SELECT tbl, id, max(mark) AS mark FROM (
        SELECT tbl, id, 1 AS mark FROM pairs WHERE product_id = :caravan
        UNION ALL
        SELECT tbl, id, 0 FROM links WHERE product_id = :caravan
    ) m GROUP BY tbl, id
),
labels AS (
    SELECT w.id, w.propensity, CAST(extract(epoch FROM w.scored_at) AS float8) AS scored,
           CASE WHEN m.mark = 1 THEN 1
                WHEN m.mark = 0 THEN -2
                WHEN w.scored_at + CAST(:horizon AS interval) < :as_of THEN 0
                ELSE -1 END AS status
    FROM ({source.window}) w
    LEFT JOIN marks m ON m.tbl = w.tbl AND m.id = w.id
)
SELECT l.ids, l.propensity, l.scored, l.status, t.product, t.scored_trial, t.hit, u.unmatched
FROM (SELECT {ids} AS ids, string_agg(float8send(propensity), ''::bytea) AS propensity,
             string_agg(float8send(scored), ''::bytea) AS scored,
             string_agg(int2send(CAST(status AS int2)), ''::bytea) AS status
      FROM labels) l
CROSS JOIN (SELECT array_agg(product_id) AS product,
                   array_agg(CAST(extract(epoch FROM scored_at) AS float8)) AS scored_trial,
                   array_agg(hit) AS hit
            FROM pairs WHERE scored_at >= :since AND scored_at < :until) t
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
    ids: np.ndarray | None = None  # the window's prediction ids, in label order (Source.ids)


async def join_outcomes(
    session: AsyncSession, version: str, since: datetime, until: datetime, horizon: timedelta,
    as_of: datetime,
) -> Joined:
    """Label the version's predictions scored in [since, until) as of `as_of` (one statement)."""
    return await join_source(session, VERSION, since, until, horizon, as_of, version=version)


async def join_source(
    session: AsyncSession, source: Source, since: datetime, until: datetime, horizon: timedelta,
    as_of: datetime, **params: object,
) -> Joined:
    """Label the source's window [since, until) as of `as_of` (one statement; `params` bind its SQL)."""
    # The outcomes are hashed and the predictions stream past once: the planner's merge join sorted all
    # 1,000,000 predictions instead (300,000 predictions: 1.2 s against 1.6, bench/bench_performance.py).
    await session.execute(text("SET LOCAL work_mem = '64MB'"))
    await session.execute(text("SET LOCAL enable_mergejoin = off"))
    row = (await session.execute(_join(source), {
        **params, "since": since, "until": until, "horizon": horizon, "as_of": as_of,
        "caravan": CARAVAN,
    })).one()
    return Joined(
        # One big-endian binary column each (a million Python floats would cost more than the query).
        propensity=np.frombuffer(row.propensity or b"", dtype=">f8").astype(np.float64),
        scored=np.frombuffer(row.scored or b"", dtype=">f8").astype(np.float64),
        status=np.frombuffer(row.status or b"", dtype=">i2").astype(np.int64),
        trial_products=list(row.product or []),
        trial_scored=np.asarray(row.scored_trial or [], dtype=np.float64),
        trial_hits=np.asarray(row.hit or [], dtype=bool),
        unmatched=int(row.unmatched),
        ids=np.frombuffer(row.ids or b"", dtype=">i8").astype(np.int64) if source.ids else None,
    )

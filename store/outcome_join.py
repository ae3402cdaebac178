"""The one owner of the outcome join: which prediction each outcome is attributed to, and each label.

Rule (docs/outcomes.md). For a model version V and horizon H (elapsed seconds):

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
outcome_id) cannot change a figure. A version's window predictions come mostly packed
(store/prediction_chunks.py): what a prediction is, never its label, so outcomes cannot stale them. Its
links (which outcome may go to which prediction, store/outcome_links.py) come mostly packed too, per
horizon: a link is fixed by its two rows, and attribution is still chosen among all links at question time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.outcomes import CARAVAN
from store.outcome_links import HIT, LINKED, PACKED, link_watermarks, plan_hash_joins
from store.prediction_chunks import Packed, read_chunks, unix_us, watermarks


@dataclass(frozen=True)
class Source:
    """The predictions a join labels, as SQL. `candidates` (tbl, id, customer_id, scored_at, recommendations)
    scored in [:low, :high) may take outcomes; `window` (tbl, id, scored_at, propensity) scored in
    [:since, :until) are labelled; tbl is 0 or 1. A chunked window reads only ids above the watermarks
    (:after0, :after1): the rest comes packed (store/prediction_chunks.py); so do its links, up to the link
    watermarks (:links_o, :links_p0, :links_p1; store/outcome_links.py)."""

    candidates: str
    window: str
    chunked: bool = False


_SCORED = """
    SELECT {tag} AS tbl, id, customer_id, scored_at, {extra} FROM {table}
    WHERE model_version = :version AND scored_at >= {low} AND scored_at < {high}{live}"""
_TABLES = ((0, "predictions"), (1, "predictions_shadow"))


def _union(template: str, **fields: str) -> str:
    return " UNION ALL ".join(
        template.format(tag=tag, table=table, **{k: v.format(tag=tag) for k, v in fields.items()})
        for tag, table in _TABLES)


VERSION = Source(
    _union(_SCORED, extra="recommendations", low=":low", high=":high", live=""),
    _union(_SCORED, extra="propensity", low=":since", high=":until", live=" AND id > :after{tag}"),
    chunked=True)
"""A model version's predictions, served and shadow alike (:version)."""
LOGGED = """
    SELECT 0 AS tbl, id, customer_id, scored_at, recommendations FROM predictions
    WHERE scored_at >= :low AND scored_at < :high AND features IS NOT NULL"""
"""Candidates of the feature log's served stream: every logged served prediction, whatever its version."""


_LINK = f"""
    SELECT o.id AS oid, o.product_id, o.occurred_at, c.tbl, c.id, c.scored_at, {HIT} AS hit"""
_RELEVANT = "o.occurred_at >= :since AND o.occurred_at <= :high"  # earlier outcomes touch no window row
_LIVE_CANDIDATES = _union(_SCORED, extra="recommendations", low=":low", high=":high",
                          live=" AND id > :links_p{tag}")


def _links(source: Source, packed: bool) -> str:
    """Every linked pair of a relevant outcome and a candidate: all by one join, or (packed) the packed pairs
    inside the link watermarks, outcomes above the outcome watermark with every candidate (an index probe
    each on the predictions' (customer_id, scored_at); OFFSET 0 keeps the planner from flattening it into a
    hash join that scans them all), and outcomes up to it with candidates above their table's watermark
    (few: probes or a hash); store/outcome_links.py."""
    if not packed:
        return f"{_LINK} FROM outcomes o JOIN ({source.candidates}) c ON {LINKED} WHERE {_RELEVANT}"
    return (f"{PACKED}\n    UNION ALL{_LINK} FROM outcomes o CROSS JOIN LATERAL (SELECT * FROM "
            f"({source.candidates}) c WHERE {LINKED} OFFSET 0) c WHERE {_RELEVANT} AND o.id > :links_o"
            f"\n    UNION ALL{_LINK} FROM ({_LIVE_CANDIDATES}) c JOIN outcomes o ON {LINKED} "
            f"WHERE {_RELEVANT} AND o.id <= :links_o")


# Set-based, no per-row subquery: the links come packed or by a join (a hash join of the outcomes against
# the predictions around the window when nothing is packed: each outcome to every earlier prediction of its
# customer within the horizon, with the top-3 check), DISTINCT ON picks the latest. Links are idempotent
# here (DISTINCT ON, max, DISTINCT): the watermark bounds keep the three parts disjoint for cost, not truth.
# (A correlated EXISTS per prediction took 165 s for 100,000 predictions; an
# index probe per outcome cost more CPU than hashing 100,000 outcomes against 1,000,000 predictions.) The
# window's predictions come packed (chunks) or stream out untouched by any join as binary arrays (id,
# propensity, scored_at); the few the caravan outcomes marked (positive or superseded) are applied by id on
# the client, and the horizon's close is compared there too. Predictions scored up to H around the
# window take part, so attribution is the same as over all time (one scored before `since` can take an
# outcome, which is then neither unmatched nor the window's). Every timestamp bound arrives computed.
@functools.cache
def _join(source: Source, packed: bool = False) -> TextClause:
    return text(f"""
WITH links AS MATERIALIZED (  -- every (outcome, prediction scored in the horizon before it) pair
{_links(source, packed)}
),
attributed AS MATERIALIZED (  -- each linked outcome's latest prediction
    SELECT DISTINCT ON (oid) oid, occurred_at, product_id, tbl, id, scored_at, hit FROM links
    ORDER BY oid, scored_at DESC, tbl DESC, id DESC
),
trials AS MATERIALIZED (  -- one recommender trial per (prediction of the window, product bought)
    SELECT DISTINCT tbl, id, product_id, scored_at, hit FROM attributed
    WHERE scored_at >= :since AND scored_at < :until
),
marks AS (  -- 1: a caravan outcome is attributed to it; 0: a caravan was bought within its horizon
    SELECT tbl, id, max(mark) AS mark FROM (
        SELECT tbl, id, 1 AS mark FROM attributed WHERE product_id = :caravan
        UNION ALL
        SELECT tbl, id, 0 FROM links WHERE product_id = :caravan
    ) m GROUP BY tbl, id
)
SELECT w.*, k.*, t.*, u.*
FROM (SELECT array_send(array_agg(id * 2 + tbl)) AS window_key,
             array_send(array_agg(propensity)) AS window_p,
             array_send(array_agg(scored_at)) AS window_at
      FROM ({source.window}) w) w
CROSS JOIN (SELECT array_send(array_agg(id * 2 + tbl)) AS mark_key, array_send(array_agg(mark)) AS mark
            FROM marks) k
CROSS JOIN (SELECT array_agg(product_id) AS product, array_send(array_agg(scored_at)) AS trial_at,
                   array_agg(hit) AS hit FROM trials) t
CROSS JOIN (SELECT (SELECT count(*) FROM outcomes WHERE occurred_at >= :since AND occurred_at < :until)
                 - (SELECT count(*) FROM attributed WHERE occurred_at >= :since AND occurred_at < :until)
                   AS unmatched) u
""")


# models.live_quality's status codes (models is a sibling layer: store cannot import it).
POSITIVE, NEGATIVE, PENDING, SUPERSEDED = 1, 0, -1, -2
_POSTGRES_EPOCH_US = 946_684_800 * 1_000_000  # timestamptz counts microseconds from 2000-01-01 UTC


def _array(sent: bytes | None, element: str) -> np.ndarray:
    """A one-dimensional, null-free array from Postgres's binary send format (element: a numpy dtype)."""
    if not sent:
        return np.empty(0, dtype=np.dtype(element).newbyteorder("="))
    # 20 header bytes (ndim, null flag, element type, length, lower bound), then a 4-byte length per value.
    values = np.frombuffer(sent, dtype=np.dtype([("length", ">i4"), ("value", element)]), offset=20)
    return values["value"].astype(np.dtype(element).newbyteorder("="))


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
    ids: np.ndarray | None = None  # the window's prediction ids, in label order


def join_parameters(since: datetime, until: datetime, horizon: timedelta, **params: object) -> dict[str, Any]:
    """The join's bind parameters: every timestamp bound computed once here, not once per row."""
    # Plain elapsed time (as the settings' seconds and Python's arithmetic mean it): an interval in days
    # would make Postgres convert through the session's time zone on every row.
    return {**params, "since": since, "until": until, "low": since - horizon, "high": until + horizon,
            "horizon_seconds": horizon.total_seconds(), "caravan": CARAVAN}


async def join_outcomes(
    session: AsyncSession, version: str, since: datetime, until: datetime, horizon: timedelta,
    as_of: datetime,
) -> Joined:
    """Label the version's predictions scored in [since, until) as of `as_of` (packed rows, one statement)."""
    return await join_source(session, VERSION, since, until, horizon, as_of, version=version)


async def join_source(
    session: AsyncSession, source: Source, since: datetime, until: datetime, horizon: timedelta,
    as_of: datetime, **params: object,
) -> Joined:
    """Label the source's window [since, until) as of `as_of` (one statement, after the packed rows of a
    chunked source; `params` bind its SQL)."""
    await plan_hash_joins(session)
    # Custom plans: the watermarks decide between a primary-key range scan and a sequential scan for the
    # live rows.
    await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    packed = Packed(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int64))
    linked = False  # without packed links (a horizon never refreshed): every link by one hash join
    if source.chunked:
        marks = await watermarks(session)  # first: the join reads every id above them live
        packed = await read_chunks(session, str(params["version"]), since, until, marks)
        links = await link_watermarks(session, horizon)
        linked = any(links[mark] for mark in ("links_o", "links_p0", "links_p1"))
        params = {**params, **links, "after0": marks.get(0, 0), "after1": marks.get(1, 0)}
    statement = _join(source, linked)
    row = (await session.execute(statement, join_parameters(since, until, horizon, **params))).one()
    keys = np.concatenate((packed.keys, _array(row.window_key, ">i8")))
    scored_us = np.concatenate((packed.scored_us, _array(row.window_at, ">i8") + _POSTGRES_EPOCH_US))
    closed = scored_us < unix_us(as_of - horizon)  # scored_at + H < as_of
    status = np.where(closed, NEGATIVE, PENDING)
    mark_keys, mark_values = _array(row.mark_key, ">i8"), _array(row.mark, ">i4")
    if len(mark_keys):  # each window prediction finds its mark (if any) by binary search
        order = np.argsort(mark_keys)
        mark_keys, mark_values = mark_keys[order], mark_values[order]
        at = np.minimum(np.searchsorted(mark_keys, keys), len(mark_keys) - 1)
        found = mark_keys[at] == keys
        status[found] = np.where(mark_values[at[found]] == 1, POSITIVE, SUPERSEDED)
    return Joined(
        propensity=np.concatenate((packed.propensity, _array(row.window_p, ">f8"))),
        # Exact: the microsecond count is below 2**53 and one IEEE division rounds it as Postgres's
        # CAST(extract(epoch ...) AS float8) does.
        scored=scored_us / 1e6,
        status=status.astype(np.int64),
        trial_products=list(row.product or []),
        trial_scored=(_array(row.trial_at, ">i8") + _POSTGRES_EPOCH_US) / 1e6,
        trial_hits=np.asarray(row.hit or [], dtype=bool),
        unmatched=int(row.unmatched),
        ids=keys >> 1,
    )

"""The outcome join's link rule and its pre-aggregate: the linked (outcome, prediction) pairs, per horizon.

A pair links when the prediction is of the outcome's customer and scored in the horizon before it
(occurred_at - H <= scored_at < occurred_at); its `hit` says the product bought is in the prediction's top 3.
`outcome_links` holds, per horizon H (microseconds), every linked pair of an outcome with an id up to the
outcome watermark and a prediction (tbl 0 `predictions`, 1 `predictions_shadow`) with an id up to its table's
watermark, whatever its model version, and no other pair. Exact by construction, as the chunks are
(store/prediction_chunks.py):

* outcomes and predictions are never updated or deleted (outcomes: insert ... ON CONFLICT DO NOTHING), so
  a pair's link and hit stay what they were;
* a refresh moves the watermarks from (O, P) to (O', P') in one transaction, serialised on the horizon's
  watermark row, and adds exactly the pairs of the new box less the old: outcomes in (O, O'] with
  predictions up to P', and outcomes up to O with predictions in (P, P'];
* O' and P' are read under a SHARE lock on the three tables (held only for `max(id)`): every inserting
  transaction has ended, and ids come only from sequences with cache 1, so no smaller id commits later;
* the question reads the watermarks first, keeps only packed pairs inside them, and links the rest live by
  the same two shapes (store/outcome_join.py): the three parts are disjoint and cover every pair.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from store.prediction_chunks import REFRESH_MIN_ROWS, TABLES, read_locked

log = logging.getLogger(__name__)

HIT = "c.recommendations @> jsonb_build_array(jsonb_build_object('product_id', o.product_id))"
LINKED = ("c.customer_id = o.customer_id AND c.scored_at < o.occurred_at "
          "AND c.scored_at >= o.occurred_at - make_interval(secs => :horizon_seconds)")
"""The link rule between outcomes `o` and predictions `c` (:horizon_seconds bound)."""
PACKED = """
    SELECT oid, product_id, occurred_at, tbl, id, scored_at, hit FROM outcome_links
    WHERE horizon_us = :horizon_us AND model_version = :version AND oid <= :links_o
      AND id <= CASE tbl WHEN 0 THEN CAST(:links_p0 AS bigint) ELSE CAST(:links_p1 AS bigint) END
      AND occurred_at >= :since AND occurred_at <= :high AND scored_at >= :low AND scored_at < :high"""
"""The version's packed links inside the watermarks read (:links_o, :links_p0, :links_p1) and the window."""

_PAIRS = """
INSERT INTO outcome_links (horizon_us, oid, tbl, id, model_version, product_id, occurred_at, scored_at, hit)
SELECT :horizon_us, o.id, {tag}, c.id, c.model_version, o.product_id, o.occurred_at, c.scored_at, {hit}
FROM outcomes o JOIN {table} c ON {linked}
WHERE {where}"""
_NEW_OUTCOMES = "o.id > :after_o AND o.id <= :upto_o AND c.id <= :upto_p"
_NEW_PREDICTIONS = "o.id <= :after_o AND c.id > :after_p AND c.id <= :upto_p"
_APPENDS = {(tag, where): text(_PAIRS.format(tag=tag, table=table, hit=HIT, linked=LINKED, where=where))
            for tag, table in TABLES for where in (_NEW_OUTCOMES, _NEW_PREDICTIONS)}
_MARKS = "SELECT last_outcome, last0, last1 FROM outcome_link_watermarks WHERE horizon_us = :horizon_us"


async def plan_hash_joins(session: AsyncSession) -> None:
    """Plan this transaction's joins of outcomes and predictions as hash joins (the outcomes hashed, the
    predictions streamed past once): the planner's merge join sorted all 1,000,000 predictions instead."""
    await session.execute(text("SET LOCAL work_mem = '64MB'"))
    await session.execute(text("SET LOCAL enable_mergejoin = off"))


def horizon_us(horizon: timedelta) -> int:
    """The horizon in whole microseconds: the key of its packed links."""
    return horizon // timedelta(microseconds=1)


async def link_watermarks(session: AsyncSession, horizon: timedelta) -> dict[str, Any]:
    """The bind parameters of the horizon's packed links: its key and watermarks (zeros when none are packed:
    then every link is read live)."""
    key = horizon_us(horizon)
    row = (await session.execute(text(_MARKS), {"horizon_us": key})).one_or_none()
    last = tuple(row) if row is not None else (0, 0, 0)
    return {"horizon_us": key, "links_o": int(last[0]), "links_p0": int(last[1]), "links_p1": int(last[2])}


async def refresh_links(sessions: async_sessionmaker[AsyncSession], horizon: timedelta,
                        min_rows: int = REFRESH_MIN_ROWS) -> int:
    """Pack the horizon's links of the outcomes and predictions stored since its last refresh when at least
    `min_rows` ids lie beyond a watermark; returns how far the watermarks moved, in ids (0 when skipped, or
    when the lock was not had in time)."""
    async with sessions() as session, session.begin():
        marks = await link_watermarks(session, horizon)
        tops = await _max_ids(session)
    if all(top - mark < min_rows for top, mark in zip(tops, _last(marks), strict=True)):
        return 0
    upto = await read_locked(sessions, "predictions, predictions_shadow, outcomes", _max_ids, "outcome links")
    if upto is None:  # the sink or a vacuum holds a table: the question links more rows live
        return 0
    async with sessions() as session, session.begin():
        await plan_hash_joins(session)
        key = horizon_us(horizon)
        await session.execute(text("INSERT INTO outcome_link_watermarks VALUES (:horizon_us, 0, 0, 0) "
                                   "ON CONFLICT DO NOTHING"), {"horizon_us": key})
        after = tuple(int(v) for v in (await session.execute(text(_MARKS + " FOR UPDATE"),
                                                               {"horizon_us": key})).one())
        new = tuple(max(a, u) for a, u in zip(after, upto, strict=True))  # a racing refresh may be ahead
        params = {"horizon_us": key, "horizon_seconds": horizon.total_seconds(), "after_o": after[0],
                  "upto_o": new[0]}
        for tag, _ in TABLES:
            bounds = {**params, "after_p": after[1 + tag], "upto_p": new[1 + tag]}
            for where in (_NEW_OUTCOMES, _NEW_PREDICTIONS):
                await session.execute(_APPENDS[tag, where], bounds)
        await session.execute(text("UPDATE outcome_link_watermarks SET last_outcome = :o, last0 = :p0, "
                                   "last1 = :p1 WHERE horizon_us = :horizon_us"),
                              {"o": new[0], "p0": new[1], "p1": new[2], "horizon_us": key})
    return sum(new) - sum(after)


def _last(marks: dict[str, Any]) -> tuple[int, int, int]:
    return marks["links_o"], marks["links_p0"], marks["links_p1"]


async def _max_ids(session: AsyncSession) -> tuple[int, int, int]:
    row = (await session.execute(text(
        "SELECT (SELECT coalesce(max(id), 0) FROM outcomes), (SELECT coalesce(max(id), 0) FROM predictions), "
        "(SELECT coalesce(max(id), 0) FROM predictions_shadow)"))).one()
    return int(row[0]), int(row[1]), int(row[2])

"""The outcome join's pre-aggregate: each model version's predictions packed per table and UTC day.

A chunk (table, version, day) holds three packed big-endian columns — key (id * 2 + table), propensity,
scored_at in microseconds since 1970 — of every prediction of that table, version and day whose id is at
most its table's watermark, and of no other. It is exact by construction, not by invalidation:

* predictions are never updated or deleted, so a chunk's rows stay what they were;
* a refresh appends the rows with ids in (watermark, upto] and moves the watermark to `upto` in one
  transaction, serialised on the watermark rows, so no row is packed twice;
* `upto` is read under a SHARE lock on both prediction tables (held only for `max(id)`): the lock waits
  for every inserting transaction to end, so no row with a smaller id can commit afterwards (ids come
  only from the column default, a sequence with cache 1, drawn after the insert has locked the table);
* the join reads the watermark first, keeps only chunk rows with ids up to it, and reads every row above
  it live (store/outcome_join.py). Outcomes never enter a chunk: labels are applied at question time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import numpy as np
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")

TABLES = ((0, "predictions"), (1, "predictions_shadow"))
REFRESH_MIN_ROWS = 10_000
"""Refresh once this many ids lie beyond a watermark: fewer are cheaper read live than locked for."""
LOCK_TIMEOUT = "200ms"
"""The longest a refresh waits for the SHARE lock (the sink's inserts queue behind it meanwhile)."""
_DAY_US = 86_400_000_000
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIX_US = "CAST(extract(epoch FROM scored_at) * 1000000 AS bigint)"
_APPEND = """
INSERT INTO prediction_chunks AS c (tbl, model_version, day, rows, keys, propensity, scored)
SELECT {tag}, model_version, CAST(div(us, {day}) AS int), count(*),
       string_agg(int8send(id * 2 + {tag}), ''::bytea ORDER BY id),
       string_agg(float8send(propensity), ''::bytea ORDER BY id),
       string_agg(int8send(us), ''::bytea ORDER BY id)
FROM (SELECT id, model_version, propensity, {us} AS us FROM {table} WHERE id > :after AND id <= :upto) p
GROUP BY model_version, CAST(div(us, {day}) AS int)
ON CONFLICT (tbl, model_version, day) DO UPDATE SET
    rows = c.rows + EXCLUDED.rows, keys = c.keys || EXCLUDED.keys,
    propensity = c.propensity || EXCLUDED.propensity, scored = c.scored || EXCLUDED.scored
"""
_APPENDS = {tag: text(_APPEND.format(tag=tag, table=table, day=_DAY_US, us=_UNIX_US))
            for tag, table in TABLES}
_WATERMARKS = text("SELECT tbl, last_id FROM prediction_chunk_watermarks")
_READ = text("""
SELECT string_agg(keys, ''::bytea) AS keys, string_agg(propensity, ''::bytea) AS propensity,
       string_agg(scored, ''::bytea) AS scored
FROM prediction_chunks WHERE model_version = :version AND day >= :first AND day <= :last
""")


@dataclass(frozen=True)
class Packed:
    """Predictions of one version as the join needs them: key (id * 2 + table), propensity, scored_at (µs
    since 1970)."""

    keys: np.ndarray
    propensity: np.ndarray
    scored_us: np.ndarray


async def watermarks(session: AsyncSession) -> dict[int, int]:
    """Per table, the id up to which every prediction is in its chunk."""
    return {int(tbl): int(last) for tbl, last in (await session.execute(_WATERMARKS)).all()}


def unix_us(moment: datetime) -> int:
    """An aware time as microseconds since 1970 (exact integer arithmetic, as the chunks store it)."""
    return (moment - _UNIX_EPOCH) // timedelta(microseconds=1)


async def read_chunks(session: AsyncSession, version: str, since: datetime, until: datetime,
                      marks: dict[int, int]) -> Packed:
    """The version's chunked predictions scored in [since, until) with ids up to the watermarks `marks`
    (read before: a refresh may have committed since, and its rows are read live)."""
    since_us, until_us = unix_us(since), unix_us(until)
    row = (await session.execute(_READ, {"version": version, "first": since_us // _DAY_US - 1,
                                         "last": until_us // _DAY_US + 1})).one()
    keys = np.frombuffer(row.keys or b"", dtype=">i8").astype(np.int64)
    scored = np.frombuffer(row.scored or b"", dtype=">i8").astype(np.int64)
    limit = np.where(keys & 1, marks.get(1, 0), marks.get(0, 0))
    keep = ((keys >> 1) <= limit) & (scored >= since_us) & (scored < until_us)
    return Packed(keys[keep], np.frombuffer(row.propensity or b"", dtype=">f8").astype(np.float64)[keep],
                  scored[keep])


async def refresh_chunks(sessions: async_sessionmaker[AsyncSession], min_rows: int = REFRESH_MIN_ROWS) -> int:
    """Pack the predictions stored since the last refresh when at least `min_rows` ids lie beyond a
    watermark; returns how far the watermarks moved (0 when skipped, or when the lock was not had in
    time)."""
    async with sessions() as session, session.begin():
        marks = await watermarks(session)
        tops = await _max_ids(session)
    if all(tops[tag] - marks.get(tag, 0) < min_rows for tag, _ in TABLES):
        return 0
    upto = await read_locked(sessions, "predictions, predictions_shadow", _max_ids, "prediction chunks")
    if upto is None:  # the sink or a vacuum holds the tables: the join reads more rows live
        return 0
    async with sessions() as session, session.begin():
        marks = {int(tbl): int(last) for tbl, last in (await session.execute(
            text("SELECT tbl, last_id FROM prediction_chunk_watermarks FOR UPDATE"))).all()}
        packed = 0
        for tag, _ in TABLES:
            if upto[tag] > marks[tag]:
                await session.execute(_APPENDS[tag], {"after": marks[tag], "upto": upto[tag]})
                await session.execute(text("UPDATE prediction_chunk_watermarks SET last_id = :upto "
                                           "WHERE tbl = :tbl"), {"upto": upto[tag], "tbl": tag})
                packed += upto[tag] - marks[tag]
    return packed


async def read_locked(
    sessions: async_sessionmaker[AsyncSession], tables: str,
    read: Callable[[AsyncSession], Awaitable[T]], what: str,
) -> T | None:
    """`read` under a SHARE lock on `tables`, held only for it; None when not had within LOCK_TIMEOUT."""
    # SHARE waits for every transaction inserting into the tables to end, and ids come only from sequences
    # with cache 1 drawn after the insert has locked its table: no smaller id can commit after `read`.
    async with sessions() as session, session.begin():
        await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        try:
            await session.execute(text(f"LOCK TABLE {tables} IN SHARE MODE"))
        except DBAPIError as error:
            log.info(f"{what} not refreshed", extra={"error": repr(error)[:200]})
            return None
        return await read(session)


async def _max_ids(session: AsyncSession) -> dict[int, int]:
    row = (await session.execute(text(
        "SELECT (SELECT coalesce(max(id), 0) FROM predictions), "
        "(SELECT coalesce(max(id), 0) FROM predictions_shadow)"))).one()
    return {0: int(row[0]), 1: int(row[1])}

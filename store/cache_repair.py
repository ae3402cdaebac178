"""The durable record of Redis keys the sink missed, and the latest stored predictions to repair them with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from store.cache import CacheEntry
from store.predictions import LATEST_ORDER, cache_version

_NOTE = text(
    """
INSERT INTO cache_repair AS r (customer_id, model_version)
SELECT * FROM unnest(CAST(:customers AS text[]), CAST(:versions AS text[]))
ON CONFLICT (customer_id, model_version) DO UPDATE SET noted_at = now()
"""
)

# The latest stored prediction of each noted key (LATEST_ORDER), oldest notes first.
_PENDING = text(
    f"""
WITH noted AS (
    SELECT customer_id, model_version, noted_at FROM cache_repair ORDER BY noted_at LIMIT :limit
)
SELECT n.customer_id, n.model_version, n.noted_at, p.id, p.event_id, p.recommendations, p.propensity,
       p.segment_label, p.segment_score, p.scored_at, p.source, p.batch_id,
       CAST(extract(epoch FROM p.scored_at) * 1000000 AS bigint) AS scored_us
FROM noted n
LEFT JOIN LATERAL (
    SELECT * FROM predictions q
    WHERE q.customer_id = n.customer_id AND q.model_version = n.model_version
    ORDER BY {LATEST_ORDER} LIMIT 1
) p ON true
"""
)

_CLEAR = text(
    """
DELETE FROM cache_repair r
USING unnest(CAST(:customers AS text[]), CAST(:versions AS text[]), CAST(:noted AS timestamptz[]))
      AS d(customer_id, model_version, noted_at)
WHERE r.customer_id = d.customer_id AND r.model_version = d.model_version AND r.noted_at = d.noted_at
"""
)


async def note_cache_misses(session: AsyncSession, keys: Sequence[tuple[str, str]]) -> None:
    """Record (customer_id, model_version) keys whose Redis value may be older than Postgres."""
    if keys:
        await session.execute(
            _NOTE, {"customers": [k[0] for k in keys], "versions": [k[1] for k in keys]}
        )


@dataclass
class Repairs:
    """Noted keys read for repair: the cache entries to write and the notes to clear afterwards."""

    entries: list[CacheEntry]
    notes: list[tuple[str, str, datetime]]


def as_json(value: Any) -> Any:
    """A jsonb column as orjson writes it (asyncpg hands text() results over as the JSON text)."""
    return orjson.Fragment(value) if isinstance(value, str) else value


async def pending_repairs(session: AsyncSession, limit: int) -> Repairs:
    """Up to `limit` noted keys with the latest stored prediction of each, as Prediction JSON."""
    result = await session.execute(_PENDING, {"limit": limit})
    repairs = Repairs([], [])
    for row in result.mappings():
        repairs.notes.append((row["customer_id"], row["model_version"], row["noted_at"]))
        if row["id"] is None:
            continue
        value = orjson.dumps(
            {
                "schema_version": 1,
                "event_id": str(row["event_id"]),
                "customer_id": row["customer_id"],
                "model_version": row["model_version"],
                "recommendations": as_json(row["recommendations"]),
                "propensity": row["propensity"],
                "segment": {"label": row["segment_label"], "score": row["segment_score"]},
                "scored_at": row["scored_at"],
                "source": row["source"],
                "batch_id": str(row["batch_id"]) if row["batch_id"] else None,
            },
            option=orjson.OPT_UTC_Z,
        )
        version = cache_version(row["scored_us"], row["id"])
        repairs.entries.append((row["customer_id"], row["model_version"], value, version))
    return repairs


async def clear_repairs(session: AsyncSession, notes: Sequence[tuple[str, str, datetime]]) -> None:
    """Forget notes that were repaired (a key noted again meanwhile keeps its newer note)."""
    if notes:
        await session.execute(
            _CLEAR,
            {
                "customers": [n[0] for n in notes],
                "versions": [n[1] for n in notes],
                "noted": [n[2] for n in notes],
            },
        )

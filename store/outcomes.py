"""Stored outcomes: the sink's idempotent bulk insert into `outcomes`; callers commit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_STORE_OUTCOMES = text(
    """
INSERT INTO outcomes (outcome_id, customer_id, product_id, occurred_at, source)
SELECT outcome_id, customer_id, product_id, occurred_at, source
FROM unnest(
    CAST(:outcome_ids AS text[]), CAST(:customer_ids AS text[]), CAST(:product_ids AS text[]),
    CAST(CAST(:occurred_ats AS text[]) AS timestamptz[]), CAST(:sources AS text[])
) AS t(outcome_id, customer_id, product_id, occurred_at, source)
ON CONFLICT (outcome_id) DO NOTHING
"""
)


class OutcomeRow(NamedTuple):
    """One outcome as the outcomes table stores it (timestamp as ISO text)."""

    outcome_id: str
    customer_id: str
    product_id: str
    occurred_at: str
    source: str


async def store_outcomes(session: AsyncSession, rows: Sequence[OutcomeRow]) -> int:
    """Insert outcomes once per outcome_id (a repeated id keeps its first copy); returns the rows new."""
    if not rows:
        return 0
    columns = list(map(list, zip(*rows, strict=True)))
    result = await session.execute(_STORE_OUTCOMES, dict(zip(
        ("outcome_ids", "customer_ids", "product_ids", "occurred_ats", "sources"), columns, strict=True)))
    return int(getattr(result, "rowcount", 0) or 0)

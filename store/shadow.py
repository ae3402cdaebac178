"""Shadow predictions: the sink's idempotent bulk insert into predictions_shadow; callers commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from store.predictions import PredictionRow

# Only predictions_shadow: a shadow row never moves customers, segments or batch jobs.
_STORE_SHADOW = text(
    """
INSERT INTO predictions_shadow (event_id, customer_id, model_version, source, batch_id, recommendations,
                                propensity, segment_label, segment_score, scored_at)
SELECT event_id, customer_id, model_version, source, batch_id, recommendations::jsonb,
       propensity, segment_label, segment_score, scored_at
FROM unnest(
    CAST(:event_ids AS uuid[]), CAST(:customer_ids AS text[]), CAST(:model_versions AS text[]),
    CAST(:sources AS text[]), CAST(:batch_ids AS uuid[]), CAST(:recommendations AS text[]),
    CAST(:propensities AS float8[]), CAST(:segment_labels AS text[]), CAST(:segment_scores AS float8[]),
    CAST(CAST(:scored_ats AS text[]) AS timestamptz[])
) AS t(event_id, customer_id, model_version, source, batch_id, recommendations,
       propensity, segment_label, segment_score, scored_at)
ON CONFLICT (event_id, model_version) DO NOTHING
RETURNING 1
"""
)
_PARAMS = ("event_ids", "customer_ids", "model_versions", "sources", "batch_ids", "recommendations",
           "propensities", "segment_labels", "segment_scores", "scored_ats")
"""The unnest parameters above, in PredictionRow field order."""


async def store_shadow_predictions(session: AsyncSession, rows: Sequence[PredictionRow]) -> int:
    """Insert shadow predictions once per (event_id, model_version); returns the rows that were new."""
    if not rows:
        return 0
    # The shadow table keeps no reason codes: the first fields of PredictionRow only.
    fields = [row[: len(_PARAMS)] for row in rows]
    columns = dict(zip(_PARAMS, map(list, zip(*fields, strict=True)), strict=True))
    result = await session.execute(_STORE_SHADOW, columns)
    return len(result.all())

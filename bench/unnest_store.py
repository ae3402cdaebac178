"""The sink's store statement fed by unnest parameters, not a COPY (bench_sink_store.py compares the two)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from store.predictions import STORE_TEMPLATE, PredictionRow, StoredPredictions, stored_changes

_UNNEST_INPUT = """
    SELECT * FROM unnest(
        CAST(:event_ids AS uuid[]), CAST(:customer_ids AS text[]), CAST(:model_versions AS text[]),
        CAST(:sources AS text[]), CAST(:batch_ids AS uuid[]), CAST(:recommendations AS text[]),
        CAST(:propensities AS float8[]), CAST(:segment_labels AS text[]), CAST(:segment_scores AS float8[]),
        CAST(CAST(:scored_ats AS text[]) AS timestamptz[]), CAST(:reasons AS text[]),
        CAST(:features AS bytea[]), CAST(:trace_ids AS text[])
    ) WITH ORDINALITY AS t(event_id, customer_id, model_version, source, batch_id, recommendations,
           propensity, segment_label, segment_score, scored_at, reasons, features, trace_id, position)
"""
_STORE_PREDICTIONS = text(STORE_TEMPLATE.format(input=_UNNEST_INPUT))

_PREDICTION_PARAMS = (
    "event_ids",
    "customer_ids",
    "model_versions",
    "sources",
    "batch_ids",
    "recommendations",
    "propensities",
    "segment_labels",
    "segment_scores",
    "scored_ats",
    "reasons",
    "features",
    "trace_ids",
)
"""The unnest parameters above, in PredictionRow field order."""


async def store_predictions_unnest(
    session: AsyncSession, rows: Sequence[PredictionRow]
) -> StoredPredictions:
    """store_predictions with the rows as unnest parameters instead of a COPY."""
    if not rows:
        return StoredPredictions()
    columns = dict(zip(_PREDICTION_PARAMS, map(list, zip(*rows, strict=True)), strict=True))
    result = await session.execute(_STORE_PREDICTIONS, columns)
    return stored_changes(result.all())

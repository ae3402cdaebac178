"""Stored predictions and dead letters: the sink's bulk writes and the API's reads; callers commit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.feature_log import named
from schemas.feature_log import stored as stored_features
from schemas.messages import DEAD_LETTER_PAYLOAD_MAX, Prediction
from schemas.wire import KeyedLetter
from store.copying import copy_records
from store.tables import Prediction as PredictionTable
from store.tables import Segment

MODEL_VERSION_MAX = 64
"""Width of predictions.model_version / segments.model_version."""
PAYLOAD_STORED_MAX = 4 * DEAD_LETTER_PAYLOAD_MAX
"""Most characters of a dead letter's payload stored (letters built here are already far smaller)."""


class PredictionRow(NamedTuple):
    """One prediction as the predictions table stores it (ids and timestamp as canonical text)."""

    event_id: str
    customer_id: str
    model_version: str
    source: str
    batch_id: str | None
    recommendations: str
    propensity: float
    segment_label: str
    segment_score: float
    scored_at: str
    reasons: str | None = None  # JSON text of Prediction.reasons, when the prediction carried them
    features: bytes | None = None  # the feature log: byte i is feature i (schemas/feature_log.py)
    trace_id: str | None = None  # the sampled trace the prediction went through (sink: its record's header)

    @classmethod
    def of(cls, prediction: Prediction) -> PredictionRow:
        """The row of a validated Prediction (a naive scored_at is local time, as asyncpg reads it)."""
        recommendations = orjson.dumps(
            [
                {"product_id": r.product_id, "name": r.name, "probability": r.probability}
                for r in prediction.recommendations
            ]
        ).decode()
        return cls(
            str(prediction.event_id),
            prediction.customer_id,
            prediction.model_version,
            prediction.source,
            str(prediction.batch_id) if prediction.batch_id else None,
            recommendations,
            prediction.propensity,
            prediction.segment.label,
            prediction.segment.score,
            prediction.scored_at.astimezone(UTC).isoformat(),
            None if prediction.reasons is None
            else orjson.dumps(prediction.model_dump(mode="json", include={"reasons"})["reasons"]).decode(),
            None if prediction.features_packed is None else stored_features(prediction.features_packed),
        )


LATEST_ORDER = "scored_at DESC, id DESC"
"""The one definition of a customer's latest prediction (see docs/operations.md, "Latest prediction").

Greatest `scored_at`; ties (one micro-batch) by `predictions.id`, which the sink assigns in the order of the
customer's predictions partition, i.e. the order the scorer consumed the customer's events. Redelivered or
replayed copies are never inserted again (event_id), so they cannot change it.
"""

# The batch's rows are COPYed into a temp staging table as text, then one statement inserts them in
# partition order (duplicates skipped by event_id) and moves each segment forward from its latest new row
# only. Data-modifying CTEs run exactly once. `customers` is a view over predictions (migration 0005):
# keeping it as a table cost a quarter of Postgres's CPU.
_STAGED_INPUT = """
    SELECT CAST(event_id AS uuid) AS event_id, customer_id, model_version, source,
           CAST(batch_id AS uuid) AS batch_id, recommendations, propensity, segment_label, segment_score,
           CAST(scored_at AS timestamptz) AS scored_at, reasons, features, trace_id, position
    FROM prediction_staging
"""
# The store statement; its `input` (rows in partition order, with their position) is left open.
STORE_TEMPLATE = f"""
WITH input AS ({{input}}),
inserted AS (
    INSERT INTO predictions (event_id, customer_id, model_version, source, batch_id, recommendations,
                             propensity, segment_label, segment_score, scored_at, reasons, features,
                             trace_id)
    SELECT event_id, customer_id, model_version, source, batch_id, recommendations::jsonb,
           propensity, segment_label, segment_score, scored_at, reasons::jsonb, features, trace_id
    FROM input
    ORDER BY position
    ON CONFLICT (event_id) DO NOTHING
    RETURNING id, event_id, customer_id, model_version, batch_id, segment_label, segment_score, scored_at
),
segments_upserted AS (
    INSERT INTO segments AS s (customer_id, model_version, label, score, scored_at)
    SELECT DISTINCT ON (customer_id, model_version)
           customer_id, model_version, segment_label, segment_score, scored_at
    FROM inserted
    ORDER BY customer_id, model_version, {LATEST_ORDER}
    ON CONFLICT (customer_id, model_version) DO UPDATE SET
        label = EXCLUDED.label, score = EXCLUDED.score, scored_at = EXCLUDED.scored_at
    WHERE s.scored_at <= EXCLUDED.scored_at
    RETURNING 1
)
SELECT event_id, batch_id, id, CAST(extract(epoch FROM scored_at) * 1000000 AS bigint) FROM inserted
"""
_STORE_STAGED = text(STORE_TEMPLATE.format(input=_STAGED_INPUT))
_STAGING = text(
    """
CREATE TEMP TABLE IF NOT EXISTS prediction_staging (
    event_id text, customer_id text, model_version text, source text, batch_id text, recommendations text,
    propensity float8, segment_label text, segment_score float8, scored_at text, reasons text,
    features bytea, trace_id text, position bigint
) ON COMMIT DELETE ROWS
"""
)
# A later batch's rows always get greater ids, so the segment upsert's `<=` on scored_at across batches
# agrees with LATEST_ORDER.

_STORE_DEAD_LETTERS = text(
    """
INSERT INTO dead_letters (source_topic, source_partition, source_offset, stage, reason, payload,
                          event_id, customer_id, batch_id, failed_at, payload_encoding, payload_size,
                          payload_sha256, payload_truncated, source_key, redrive_count)
SELECT * FROM unnest(
    CAST(:topics AS text[]), CAST(:partitions AS int[]), CAST(:offsets AS bigint[]), CAST(:stages AS text[]),
    CAST(:reasons AS text[]), CAST(:payloads AS text[]), CAST(:event_ids AS uuid[]),
    CAST(:customer_ids AS text[]), CAST(:batch_ids AS uuid[]), CAST(:failed_ats AS timestamptz[]),
    CAST(:encodings AS text[]), CAST(:sizes AS int[]), CAST(:sha256s AS text[]), CAST(:truncated AS bool[]),
    CAST(:keys AS bytea[]), CAST(:redrive_counts AS int[])
)
ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING
RETURNING batch_id
"""
)


@dataclass
class StoredPredictions:
    """What one store call changed: newly inserted event ids and new rows per batch job."""

    inserted: set[str] = field(default_factory=set)  # canonical text, as PredictionRow.event_id
    per_batch: Counter[UUID] = field(default_factory=Counter)
    versions: dict[str, str] = field(default_factory=dict)  # event_id -> cache_version of the new row


async def store_predictions(session: AsyncSession, rows: Sequence[PredictionRow]) -> StoredPredictions:
    """Insert predictions idempotently on event_id and upsert segments from the new ones."""
    if not rows:
        return StoredPredictions()
    await session.execute(_STAGING)
    # COPY of the rows as they are (ids and timestamp as text, cast in SQL): asyncpg checks every element of
    # a list parameter against collections.abc ABCs in Python, but not a COPY record's fields. The sink's
    # CPU per row 5.3 -> 2.7 µs against unnest, Postgres's the same (bench/unnest_store.py).
    records = [(*row, position) for position, row in enumerate(rows, 1)]
    await copy_records(session, "prediction_staging", records)
    result = await session.execute(_STORE_STAGED)
    return stored_changes(result.all())


def stored_changes(inserted: Sequence[Any]) -> StoredPredictions:
    """What the store statement's RETURNING rows (event_id, batch_id, id, scored_at in µs) say it changed."""
    stored = StoredPredictions()
    for event_id, batch_id, row_id, scored_us in inserted:
        key = str(event_id)
        stored.inserted.add(key)
        stored.versions[key] = cache_version(scored_us, row_id)
        if batch_id is not None:
            stored.per_batch[batch_id] += 1
    return stored


def cache_version(scored_us: int, row_id: int) -> str:
    """LATEST_ORDER as a fixed-width string: the cache keeps the value with the greatest one."""
    return f"{scored_us:017d}-{row_id:019d}"


async def store_dead_letters(
    session: AsyncSession, keyed: Sequence[KeyedLetter]
) -> tuple[int, Counter[UUID]]:
    """Insert dead letters (with their original record's key, for redrive) once per origin (topic,
    partition, offset): (new rows, new rows per batch job)."""
    if not keyed:
        return 0, Counter()
    letters = [item.letter for item in keyed]
    result = await session.execute(
        _STORE_DEAD_LETTERS,
        {
            "topics": [d.topic for d in letters],
            "partitions": [d.partition for d in letters],
            "offsets": [d.offset for d in letters],
            "stages": [d.stage for d in letters],
            "reasons": [d.reason for d in letters],
            # text cannot hold NUL; a letter from an older producer may still be unbounded
            "payloads": [d.payload[:PAYLOAD_STORED_MAX].replace("\x00", "\ufffd") for d in letters],
            "event_ids": [d.event_id for d in letters],
            "customer_ids": [d.customer_id[:255] if d.customer_id else None for d in letters],
            "batch_ids": [d.batch_id for d in letters],
            "failed_ats": [d.failed_at for d in letters],
            "encodings": [d.payload_encoding for d in letters],
            "sizes": [d.payload_size for d in letters],
            "sha256s": [d.payload_sha256 for d in letters],
            "truncated": [d.payload_truncated for d in letters],
            "keys": [item.key for item in keyed],
            "redrive_counts": [d.redrive_count for d in letters],
        },
    )
    batch_ids = [row[0] for row in result.all()]
    return len(batch_ids), Counter(b for b in batch_ids if b is not None)


async def latest_prediction(session: AsyncSession, customer_id: str) -> PredictionTable | None:
    """The customer's latest prediction by LATEST_ORDER (any model version)."""
    result = await session.execute(
        select(PredictionTable)
        .where(PredictionTable.customer_id == customer_id)
        .order_by(PredictionTable.scored_at.desc(), PredictionTable.id.desc())  # LATEST_ORDER
        .limit(1)
    )
    return result.scalar_one_or_none()


async def recent_predictions(session: AsyncSession, limit: int) -> Sequence[PredictionTable]:
    """The last `limit` stored predictions, newest first (by row id)."""
    return (await session.scalars(
        select(PredictionTable).order_by(PredictionTable.id.desc()).limit(limit))).all()


async def segment_counts(session: AsyncSession, version: str) -> dict[str, int]:
    """Customers per segment label of one model version (scans every segment of the version)."""
    rows = await session.execute(
        select(Segment.label, func.count()).where(Segment.model_version == version).group_by(Segment.label))
    return {label: int(n) for label, n in rows.all()}


async def batch_predictions_page(
    session: AsyncSession, batch_id: UUID, after_id: int, limit: int
) -> Sequence[PredictionTable]:
    """The next page of a batch's predictions by id (keyset pagination on ix_predictions_batch)."""
    result = await session.execute(
        select(PredictionTable)
        .where(PredictionTable.batch_id == batch_id, PredictionTable.id > after_id)
        .order_by(PredictionTable.id)
        .limit(limit)
    )
    return result.scalars().all()


def prediction_payload(row: PredictionTable) -> dict[str, Any]:
    """A stored prediction in the shape of the `Prediction` contract (orjson-serialisable)."""
    return {
        "schema_version": 1,
        "event_id": row.event_id,
        "customer_id": row.customer_id,
        "model_version": row.model_version,
        "recommendations": row.recommendations,
        "propensity": row.propensity,
        "segment": {"label": row.segment_label, "score": row.segment_score},
        "scored_at": row.scored_at,
        "source": row.source,
        "batch_id": row.batch_id,
        "reasons": row.reasons,
    }


def prediction_history_entry(row: PredictionTable, with_features: bool) -> dict[str, Any]:
    """One decision of a customer's history; its logged features (by column name) only when asked."""
    entry: dict[str, Any] = {
        "event_id": row.event_id,
        "model_version": row.model_version,
        "recommendations": row.recommendations,
        "propensity": row.propensity,
        "segment": {"label": row.segment_label, "score": row.segment_score},
        "reasons": row.reasons,
        "scored_at": row.scored_at,
        "source": row.source,
        "trace_id": row.trace_id,
    }
    if with_features:
        entry["features"] = None if row.features is None else named(list(row.features))
    return entry


async def prediction_history(
    session: AsyncSession, customer_id: str, limit: int
) -> Sequence[PredictionTable]:
    """The customer's latest `limit` predictions, newest first (LATEST_ORDER, any model version)."""
    result = await session.execute(
        select(PredictionTable)
        .where(PredictionTable.customer_id == customer_id)
        .order_by(PredictionTable.scored_at.desc(), PredictionTable.id.desc())  # LATEST_ORDER
        .limit(limit)
    )
    return result.scalars().all()

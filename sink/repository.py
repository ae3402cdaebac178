"""Postgres bulk writes of the sink, one round-trip per statement; callers (the batch boundary) commit.

Also home of the batch-job completion rule, shared with the API (`mark_published`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.messages import DeadLetter
from sink.parsing import PredictionRow


def complete_if_done_sql(
    scored: str = "rows_scored", dead: str = "rows_dead", published: str = "published"
) -> str:
    """SET-clause fragment applying the completion rule to batch_jobs, given the row's NEW values.

    A job is 'completed' (finished_at stamped once) when the API has published every valid row and
    the sink has accounted for each (scored + dead-lettered >= valid); otherwise it is 'processing'.
    'failed' and 'completed' are final. Pass expressions for the values the same UPDATE assigns,
    because SET expressions read the old row.
    """
    done = f"(({published}) AND ({scored}) + ({dead}) >= rows_valid)"
    return (
        f"status = CASE WHEN status IN ('failed', 'completed') THEN status "
        f"WHEN {done} THEN 'completed' ELSE 'processing' END, "
        f"finished_at = CASE WHEN status <> 'failed' AND {done} THEN coalesce(finished_at, now()) "
        f"ELSE finished_at END, "
        f"updated_at = now()"
    )


_MARK_PUBLISHED = text(
    f"UPDATE batch_jobs SET published = true, {complete_if_done_sql(published='true')} "
    "WHERE task_id = :task_id"
)

_ADD_PROGRESS = text(
    "UPDATE batch_jobs AS j SET rows_scored = j.rows_scored + d.scored, rows_dead = j.rows_dead + d.dead, "
    + complete_if_done_sql(
        scored="j.rows_scored + d.scored", dead="j.rows_dead + d.dead", published="j.published"
    )
    + " FROM unnest(CAST(:task_ids AS uuid[]), CAST(:scored AS int[]), CAST(:dead AS int[])) "
    "AS d(task_id, scored, dead) WHERE j.task_id = d.task_id"
)

# One statement: insert the batch's predictions (duplicates skipped by event_id), then move each
# customer and segment forward from the rows that were new. Data-modifying CTEs run exactly once.
_STORE_PREDICTIONS = text(
    """
WITH input AS (
    SELECT * FROM unnest(
        CAST(:event_ids AS uuid[]), CAST(:customer_ids AS text[]), CAST(:model_versions AS text[]),
        CAST(:sources AS text[]), CAST(:batch_ids AS uuid[]), CAST(:recommendations AS text[]),
        CAST(:propensities AS float8[]), CAST(:segment_labels AS text[]), CAST(:segment_scores AS float8[]),
        CAST(CAST(:scored_ats AS text[]) AS timestamptz[])
    ) AS t(event_id, customer_id, model_version, source, batch_id, recommendations,
           propensity, segment_label, segment_score, scored_at)
),
inserted AS (
    INSERT INTO predictions (event_id, customer_id, model_version, source, batch_id, recommendations,
                             propensity, segment_label, segment_score, scored_at)
    SELECT event_id, customer_id, model_version, source, batch_id, recommendations::jsonb,
           propensity, segment_label, segment_score, scored_at
    FROM input
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, customer_id, model_version, batch_id, propensity, segment_label, segment_score,
              scored_at
),
latest AS (
    SELECT DISTINCT ON (customer_id) customer_id, event_id, model_version, propensity, scored_at,
           count(*) OVER (PARTITION BY customer_id) AS added
    FROM inserted
    ORDER BY customer_id, scored_at DESC, event_id
),
customers_upserted AS (
    INSERT INTO customers AS c (customer_id, last_event_id, model_version, propensity, last_scored_at,
                                predictions_count)
    SELECT customer_id, event_id, model_version, propensity, scored_at, added FROM latest
    ON CONFLICT (customer_id) DO UPDATE SET
        last_event_id = CASE WHEN EXCLUDED.last_scored_at >= c.last_scored_at
                             THEN EXCLUDED.last_event_id ELSE c.last_event_id END,
        model_version = CASE WHEN EXCLUDED.last_scored_at >= c.last_scored_at
                             THEN EXCLUDED.model_version ELSE c.model_version END,
        propensity = CASE WHEN EXCLUDED.last_scored_at >= c.last_scored_at
                          THEN EXCLUDED.propensity ELSE c.propensity END,
        last_scored_at = GREATEST(c.last_scored_at, EXCLUDED.last_scored_at),
        predictions_count = c.predictions_count + EXCLUDED.predictions_count
    RETURNING 1
),
segments_upserted AS (
    INSERT INTO segments AS s (customer_id, model_version, label, score, scored_at)
    SELECT DISTINCT ON (customer_id, model_version)
           customer_id, model_version, segment_label, segment_score, scored_at
    FROM inserted
    ORDER BY customer_id, model_version, scored_at DESC, event_id
    ON CONFLICT (customer_id, model_version) DO UPDATE SET
        label = EXCLUDED.label, score = EXCLUDED.score, scored_at = EXCLUDED.scored_at
    WHERE s.scored_at <= EXCLUDED.scored_at
    RETURNING 1
)
SELECT event_id, batch_id FROM inserted
"""
)

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
)
"""The unnest parameters above, in PredictionRow field order."""

_STORE_DEAD_LETTERS = text(
    """
INSERT INTO dead_letters (source_topic, source_partition, source_offset, stage, reason, payload,
                          event_id, customer_id, batch_id, failed_at)
SELECT * FROM unnest(
    CAST(:topics AS text[]), CAST(:partitions AS int[]), CAST(:offsets AS bigint[]), CAST(:stages AS text[]),
    CAST(:reasons AS text[]), CAST(:payloads AS text[]), CAST(:event_ids AS uuid[]),
    CAST(:customer_ids AS text[]), CAST(:batch_ids AS uuid[]), CAST(:failed_ats AS timestamptz[])
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


async def store_predictions(session: AsyncSession, rows: Sequence[PredictionRow]) -> StoredPredictions:
    """Insert predictions idempotently on event_id and upsert customers/segments from the new ones."""
    if not rows:
        return StoredPredictions()
    columns = dict(zip(_PREDICTION_PARAMS, map(list, zip(*rows, strict=True)), strict=True))
    result = await session.execute(_STORE_PREDICTIONS, columns)
    stored = StoredPredictions()
    for event_id, batch_id in result.all():
        stored.inserted.add(str(event_id))
        if batch_id is not None:
            stored.per_batch[batch_id] += 1
    return stored


async def store_dead_letters(
    session: AsyncSession, letters: Sequence[DeadLetter]
) -> tuple[int, Counter[UUID]]:
    """Insert dead letters once per origin (topic, partition, offset): (new rows, new rows per batch job)."""
    if not letters:
        return 0, Counter()
    result = await session.execute(
        _STORE_DEAD_LETTERS,
        {
            "topics": [d.topic for d in letters],
            "partitions": [d.partition for d in letters],
            "offsets": [d.offset for d in letters],
            "stages": [d.stage for d in letters],
            "reasons": [d.reason for d in letters],
            "payloads": [d.payload.replace("\x00", "\ufffd") for d in letters],  # text cannot hold NUL
            "event_ids": [d.event_id for d in letters],
            "customer_ids": [d.customer_id[:255] if d.customer_id else None for d in letters],
            "batch_ids": [d.batch_id for d in letters],
            "failed_ats": [d.failed_at for d in letters],
        },
    )
    batch_ids = [row[0] for row in result.all()]
    return len(batch_ids), Counter(b for b in batch_ids if b is not None)


async def add_batch_progress(
    session: AsyncSession, scored: Counter[UUID] | None = None, dead: Counter[UUID] | None = None
) -> None:
    """Add newly stored rows to their batch jobs' counters and apply the completion rule."""
    scored, dead = scored or Counter(), dead or Counter()
    task_ids = sorted(set(scored) | set(dead))  # a fixed lock order, so two sinks cannot deadlock
    if not task_ids:
        return
    await session.execute(
        _ADD_PROGRESS,
        {
            "task_ids": task_ids,
            "scored": [scored[t] for t in task_ids],
            "dead": [dead[t] for t in task_ids],
        },
    )


async def mark_published(session: AsyncSession, task_id: UUID) -> None:
    """For the API: every valid row of the job is on the broker; complete it if the sink is already done."""
    await session.execute(_MARK_PUBLISHED, {"task_id": task_id})

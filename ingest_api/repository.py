"""Queries the API runs on batch jobs and stored predictions; callers (the request boundary) commit.

The completion rule ("published, and every valid row scored or dead-lettered") lives in
sink.repository.mark_published, shared with the sink so both sides apply the same single-statement rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from store.tables import BatchJob, Prediction


async def create_batch_job(session: AsyncSession, task_id: UUID, filename: str | None) -> None:
    """Stage a queued job row."""
    session.add(BatchJob(task_id=task_id, status="queued", filename=filename[:255] if filename else None))
    await session.flush()


async def get_batch_job(session: AsyncSession, task_id: UUID) -> BatchJob | None:
    """The job, or None."""
    return await session.get(BatchJob, task_id, populate_existing=True)


async def record_upload_counts(
    session: AsyncSession,
    task_id: UUID,
    rows_total: int,
    rows_valid: int,
    rows_invalid: int,
    errors: Sequence[dict[str, Any]],
) -> None:
    """Store what the upload found (the rows are already on the broker)."""
    await session.execute(
        update(BatchJob)
        .where(BatchJob.task_id == task_id)
        .values(rows_total=rows_total, rows_valid=rows_valid, rows_invalid=rows_invalid,
                errors=list(errors), updated_at=func.now())
    )


async def fail_batch_job(session: AsyncSession, task_id: UUID, reason: str) -> None:
    """Mark the job failed with a reason."""
    await session.execute(
        update(BatchJob)
        .where(BatchJob.task_id == task_id)
        .values(status="failed", failure_reason=reason[:2000], finished_at=func.now(), updated_at=func.now())
    )


async def latest_prediction(session: AsyncSession, customer_id: str) -> Prediction | None:
    """The customer's most recently scored prediction (any model version)."""
    result = await session.execute(
        select(Prediction)
        .where(Prediction.customer_id == customer_id)
        .order_by(Prediction.scored_at.desc(), Prediction.id.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


async def batch_predictions_page(
    session: AsyncSession, batch_id: UUID, after_id: int, limit: int
) -> Sequence[Prediction]:
    """The next page of a batch's predictions by id (keyset pagination on ix_predictions_batch)."""
    result = await session.execute(
        select(Prediction)
        .where(Prediction.batch_id == batch_id, Prediction.id > after_id)
        .order_by(Prediction.id)
        .limit(limit)
    )
    return result.scalars().all()


def prediction_payload(row: Prediction) -> dict[str, Any]:
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
    }

"""Every status change of a batch job, and its completion rule; callers (the boundary) commit.

A job is created `queued` by the API's upload; the API marks it published once every valid row is on the
broker; the sink adds the rows it stored or dead-lettered. It is `completed` (finished_at stamped once) when
it is published and every valid row is accounted for (scored + dead-lettered >= valid), else `processing`.
`failed` and `completed` are final.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.jobs import FINAL_STATUSES, JobStatus
from store.tables import BatchJob

_FINAL_SQL = ", ".join(f"'{status.value}'" for status in sorted(FINAL_STATUSES))


def _complete_if_done_sql(
    scored: str = "rows_scored", dead: str = "rows_dead", published: str = "published"
) -> str:
    """SET-clause fragment applying the completion rule to batch_jobs, given the row's NEW values.

    Pass expressions for the values the same UPDATE assigns, because SET expressions read the old row.
    """
    done = f"(({published}) AND ({scored}) + ({dead}) >= rows_valid)"
    return (
        f"status = CASE WHEN status IN ({_FINAL_SQL}) THEN status "
        f"WHEN {done} THEN '{JobStatus.COMPLETED.value}' ELSE '{JobStatus.PROCESSING.value}' END, "
        f"finished_at = CASE WHEN status <> '{JobStatus.FAILED.value}' AND {done} "
        f"THEN coalesce(finished_at, now()) ELSE finished_at END, "
        f"updated_at = now()"
    )


_MARK_PUBLISHED = text(
    f"UPDATE batch_jobs SET published = true, {_complete_if_done_sql(published='true')} "
    "WHERE task_id = :task_id"
)

_ADD_PROGRESS = text(
    "UPDATE batch_jobs AS j SET rows_scored = j.rows_scored + d.scored, rows_dead = j.rows_dead + d.dead, "
    + _complete_if_done_sql(
        scored="j.rows_scored + d.scored", dead="j.rows_dead + d.dead", published="j.published"
    )
    + " FROM unnest(CAST(:task_ids AS uuid[]), CAST(:scored AS int[]), CAST(:dead AS int[])) "
    "AS d(task_id, scored, dead) WHERE j.task_id = d.task_id"
)


async def create_batch_job(session: AsyncSession, task_id: UUID, filename: str | None) -> None:
    """Stage a queued job row."""
    name = filename[:255] if filename else None
    session.add(BatchJob(task_id=task_id, status=JobStatus.QUEUED.value, filename=name))
    await session.flush()


async def get_batch_job(session: AsyncSession, task_id: UUID) -> BatchJob | None:
    """The job, or None."""
    return await session.get(BatchJob, task_id, populate_existing=True)


async def recent_batch_jobs(session: AsyncSession, limit: int) -> Sequence[BatchJob]:
    """The last `limit` jobs, newest first (by creation time)."""
    return (await session.scalars(select(BatchJob).order_by(BatchJob.created_at.desc()).limit(limit))).all()


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
        .values(status=JobStatus.FAILED.value, failure_reason=reason[:2000], finished_at=func.now(),
                updated_at=func.now())
    )


async def mark_published(session: AsyncSession, task_id: UUID) -> None:
    """Every valid row of the job is on the broker; complete it if the sink is already done."""
    await session.execute(_MARK_PUBLISHED, {"task_id": task_id})


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

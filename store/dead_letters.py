"""Dead-letter queries: list and show with filters, claim letters for a redrive, and log each redrive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from store.tables import DeadLetterRecord, DeadLetterRedrive


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters: every given field must match (reason: a case-insensitive substring)."""

    ids: tuple[int, ...] = ()
    stage: str | None = None
    reason: str | None = None
    source_topic: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str | None = None

    def empty(self) -> bool:
        """True when nothing narrows the selection (every letter matches)."""
        return self == DeadLetterFilter()


def _escaped(text: str) -> str:
    """`text` as a literal inside a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(query: Select[Any], where: DeadLetterFilter) -> Select[Any]:
    table = DeadLetterRecord
    if where.ids:
        query = query.where(table.id.in_(where.ids))
    if where.stage is not None:
        query = query.where(table.stage == where.stage)
    if where.reason:
        query = query.where(table.reason.ilike(f"%{_escaped(where.reason)}%", escape="\\"))
    if where.source_topic is not None:
        query = query.where(table.source_topic == where.source_topic)
    if where.since is not None:
        query = query.where(table.failed_at >= where.since)
    if where.until is not None:
        query = query.where(table.failed_at < where.until)
    if where.status is not None:
        query = query.where(table.status == where.status)
    return query


async def list_dead_letters(
    session: AsyncSession, where: DeadLetterFilter, limit: int, before_id: int | None = None
) -> Sequence[DeadLetterRecord]:
    """Matching letters, newest first (keyset pages: pass the last id seen as `before_id`)."""
    query = _filtered(select(DeadLetterRecord), where)
    if before_id is not None:
        query = query.where(DeadLetterRecord.id < before_id)
    result = await session.execute(query.order_by(DeadLetterRecord.id.desc()).limit(limit))
    return result.scalars().all()


async def get_dead_letter(session: AsyncSession, letter_id: int) -> DeadLetterRecord | None:
    """One letter by id."""
    return await session.get(DeadLetterRecord, letter_id)


async def redrives_of(session: AsyncSession, letter_id: int) -> Sequence[DeadLetterRedrive]:
    """The redrive log of one letter, oldest first."""
    result = await session.execute(
        select(DeadLetterRedrive)
        .where(DeadLetterRedrive.dead_letter_id == letter_id)
        .order_by(DeadLetterRedrive.id)
    )
    return result.scalars().all()


async def claim_for_redrive(
    session: AsyncSession, where: DeadLetterFilter, limit: int, lock: bool = True
) -> Sequence[DeadLetterRecord]:
    """Open letters matching `where`, oldest first, locked until the transaction ends (letters another
    redrive holds are skipped, so two redrives never send the same letter)."""
    query = _filtered(select(DeadLetterRecord), where).where(DeadLetterRecord.status == "open")
    query = query.order_by(DeadLetterRecord.id).limit(limit)
    if lock:
        query = query.with_for_update(skip_locked=True)
    return (await session.execute(query)).scalars().all()


@dataclass(frozen=True)
class RedriveEntry:
    """One line of the redrive log to write."""

    dead_letter_id: int
    outcome: str  # redriven|quarantined
    redrive_count: int
    target_topic: str
    target_partition: int | None = None
    target_offset: int | None = None


async def record_redrives(session: AsyncSession, entries: Sequence[RedriveEntry], by: str) -> None:
    """Log each redrive decision and move its letter to the outcome's status (in the caller's transaction)."""
    if not entries:
        return
    session.add_all(
        DeadLetterRedrive(
            dead_letter_id=e.dead_letter_id, outcome=e.outcome, redrive_count=e.redrive_count,
            redriven_by=by[:128], target_topic=e.target_topic, target_partition=e.target_partition,
            target_offset=e.target_offset,
        )
        for e in entries
    )
    for outcome in {e.outcome for e in entries}:
        ids = [e.dead_letter_id for e in entries if e.outcome == outcome]
        await session.execute(
            update(DeadLetterRecord).where(DeadLetterRecord.id.in_(ids)).values(status=outcome)
        )

"""Dead-letter routes (admin): list and show stored dead letters, and redrive them to their origin topic."""

from __future__ import annotations

import base64
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from infra.kafka import topic_name
from ingest_api.auth.dependencies import AdminPrincipal
from ingest_api.console import dead_letter_redrive as redrive
from ingest_api.deps import ServicesDep
from ingest_api.errors import AUTH_ERRORS, ApiError, error_responses
from schemas import topics
from schemas.messages import Stage
from store import dead_letters as stored
from store.tables import DeadLetterRecord

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/dead-letters", tags=["dead letters"])
Status = Literal["open", "redriven", "quarantined"]
ID_MAX = 2**63 - 1  # bigint
TEXT = r"^[^\x00]+$"  # Postgres text cannot hold NUL
LetterId = Annotated[int, Field(ge=1, le=ID_MAX)]


def _utc(value: datetime) -> datetime:
    """A time as UTC (a naive one is taken as UTC); one that UTC cannot hold is refused."""
    try:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range once converted to UTC") from None


Instant = Annotated[datetime, AfterValidator(_utc)]


class DeadLetterSummary(BaseModel):
    """A stored dead letter: where it came from, why it failed, and what became of it."""

    id: int
    stage: str
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: str | None = Field(description="The original record's key (UTF-8, else `base64:` and base64).")
    event_id: UUID | None
    customer_id: str | None
    batch_id: UUID | None
    failed_at: datetime
    status: Status
    redrive_count: int = Field(description="Times the record had been redriven before this failure.")
    payload_size: int | None
    payload_truncated: bool | None = Field(description="True when only a prefix was kept: no redrive.")


class RedriveLogLine(BaseModel):
    """One redrive decision on a letter."""

    outcome: str
    redrive_count: int
    redriven_by: str
    redriven_at: datetime
    target_topic: str
    target_partition: int | None
    target_offset: int | None


class DeadLetterDetail(DeadLetterSummary):
    """A dead letter with its decoded payload and its redrive log."""

    payload: str = Field(description="The original value as text (non-UTF-8 bytes as backslash escapes).")
    payload_encoding: str | None
    payload_sha256: str | None
    redrives: list[RedriveLogLine]


class DeadLetterPage(BaseModel):
    """Matching dead letters, newest first; pass `next_before_id` as `before_id` for the next page."""

    items: list[DeadLetterSummary]
    next_before_id: int | None


class RedriveRequest(BaseModel):
    """Which letters to redrive: `ids`, a filter, or `all`; only open letters are ever sent."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"stage": "validation",
                                                                               "dry_run": True}]})

    ids: list[LetterId] = Field(default_factory=list, max_length=1000)
    stage: Stage | None = None
    reason: str | None = Field(default=None, min_length=1, max_length=200, pattern=TEXT,
                               description="Substring of the reason.")
    source_topic: str | None = Field(default=None, min_length=1, max_length=255, pattern=TEXT)
    since: Instant | None = None
    until: Instant | None = None
    all: bool = Field(default=False, description="Required to redrive every open letter (no ids, no filter).")
    dry_run: bool = Field(default=False, description="Decide and report, but send and change nothing.")
    limit: int = Field(default=1000, ge=1, le=10_000, description="Most letters in one redrive.")
    payload: str | None = Field(
        default=None, max_length=1024 * 1024,
        description="A corrected value (UTF-8) sent instead of the stored one; only with exactly one id.",
    )

    @model_validator(mode="after")
    def _scoped(self) -> RedriveRequest:
        if self.payload is not None and len(self.ids) != 1:
            raise ValueError("payload: a corrected payload needs exactly one id")
        if self.payload is not None:
            try:
                self.payload.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("payload: not UTF-8 text (it holds a lone surrogate)") from None
        if not self.all and self.filter().empty():
            raise ValueError("give ids, a filter (stage, reason, source_topic, since, until) or all=true")
        return self

    def filter(self) -> stored.DeadLetterFilter:
        """The store filter these fields select."""
        return stored.DeadLetterFilter(ids=tuple(self.ids), stage=self.stage, reason=self.reason,
                                       source_topic=self.source_topic, since=self.since, until=self.until)


class RedriveResult(BaseModel):
    """One letter's decision."""

    id: int
    reason: str
    outcome: Literal["redriven", "quarantined", "refused"]
    redrive_count: int = Field(
        description="The count the redriven record carries (its header), else the letter's."
    )
    detail: str | None


class RedriveGroup(BaseModel):
    """Decisions per dead-letter reason."""

    reason: str
    redriven: int
    quarantined: int
    refused: int


class RedriveReport(BaseModel):
    """What a redrive did (or, with dry_run, would do)."""

    dry_run: bool
    redriven: int
    quarantined: int
    refused: int
    groups: list[RedriveGroup]
    results: list[RedriveResult]


def key_text(key: bytes | None) -> str | None:
    """A record key for display: its UTF-8 text, else `base64:` and its base64."""
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(key).decode("ascii")


def summary(row: DeadLetterRecord) -> DeadLetterSummary:
    """The list view of a stored letter."""
    return DeadLetterSummary(
        id=row.id, stage=row.stage, reason=row.reason, source_topic=row.source_topic,
        source_partition=row.source_partition, source_offset=row.source_offset, key=key_text(row.source_key),
        event_id=row.event_id, customer_id=row.customer_id, batch_id=row.batch_id, failed_at=row.failed_at,
        status=row.status,  # type: ignore[arg-type]  # the column only holds DEAD_LETTER_STATUSES
        redrive_count=row.redrive_count, payload_size=row.payload_size,
        payload_truncated=row.payload_truncated,
    )


def decoded_payload(row: DeadLetterRecord) -> str:
    """The stored payload as readable text (a base64 payload decoded, bytes outside UTF-8 escaped)."""
    if row.payload_encoding != "base64":
        return row.payload
    try:
        return base64.b64decode(row.payload).decode("utf-8", errors="backslashreplace")
    except ValueError:
        return row.payload


@router.get("", summary="List dead letters", responses=error_responses(*AUTH_ERRORS))
async def list_letters(
    services: ServicesDep,
    _: AdminPrincipal,
    stage: Stage | None = None,
    reason: Annotated[str | None, Query(min_length=1, max_length=200, pattern=TEXT,
                                        description="Reason text.")] = None,
    source_topic: Annotated[str | None, Query(min_length=1, max_length=255, pattern=TEXT)] = None,
    since: Instant | None = None,
    until: Instant | None = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before_id: Annotated[int | None, Query(ge=1, le=ID_MAX)] = None,
) -> DeadLetterPage:
    """Matching letters, newest first, one page at a time."""
    where = stored.DeadLetterFilter(stage=stage, reason=reason, source_topic=source_topic, since=since,
                                    until=until, status=status)
    async with services.sessionmaker() as session:
        rows = await stored.list_dead_letters(session, where, limit, before_id)
    items = [summary(row) for row in rows]
    return DeadLetterPage(items=items, next_before_id=items[-1].id if len(items) == limit else None)


@router.get("/{letter_id}", summary="Show one dead letter", responses=error_responses(*AUTH_ERRORS, 404))
async def show_letter(
    services: ServicesDep, _: AdminPrincipal, letter_id: Annotated[int, Path(ge=1, le=ID_MAX)]
) -> DeadLetterDetail:
    """The letter with its decoded payload and redrive log."""
    async with services.sessionmaker() as session:
        row = await stored.get_dead_letter(session, letter_id)
        if row is None:
            raise ApiError(404, f"no dead letter {letter_id}")
        log_lines = await stored.redrives_of(session, letter_id)
    return DeadLetterDetail(
        **summary(row).model_dump(), payload=decoded_payload(row), payload_encoding=row.payload_encoding,
        payload_sha256=row.payload_sha256,
        redrives=[RedriveLogLine.model_validate(line, from_attributes=True) for line in log_lines],
    )


@router.post(
    "/redrive",
    summary="Redrive dead letters",
    description=(
        "Sends each selected open letter's original record back to its origin topic with its original key "
        "and a `streamscore-redrive-count` header one above the letter's count. A letter already redriven "
        "`dead_letter_redrive_max` times is quarantined instead; one whose payload was cut is refused. "
        "Every decision is logged with who made it. `dry_run` reports the same decisions and changes nothing."
    ),
    responses=error_responses(*AUTH_ERRORS, 422, 503),
)
async def redrive_letters(
    services: ServicesDep, principal: AdminPrincipal, body: RedriveRequest
) -> RedriveReport:
    """Decide, publish and log in one transaction holding the letters, so no letter is sent twice at once."""
    settings = services.settings
    dead_topic = topic_name(settings, topics.DEAD_LETTER)
    replacement = body.payload.encode("utf-8") if body.payload is not None else None
    async with services.sessionmaker() as session, session.begin():
        letters = await stored.claim_for_redrive(session, body.filter(), body.limit, lock=not body.dry_run)
        decisions = [redrive.decide(letter, settings.dead_letter_redrive_max, dead_topic, replacement)
                     for letter in letters]
        if not body.dry_run:
            await redrive.publish(services.producer, decisions)
            await stored.record_redrives(session, redrive.log_entries(decisions), principal.subject)
    report = build_report(decisions, body.dry_run)
    if not body.dry_run:
        counts = {"redriven": report.redriven, "quarantined": report.quarantined, "refused": report.refused}
        log.info("dead letters redriven", extra={"by": principal.subject, **counts})
    return report


def build_report(decisions: list[redrive.Decision], dry_run: bool) -> RedriveReport:
    """Totals, per-reason groups (largest first) and one result per letter."""
    outcomes = Counter(d.outcome for d in decisions)
    per_reason: dict[str, Counter[str]] = {}
    for d in decisions:
        per_reason.setdefault(d.letter.reason, Counter())[d.outcome] += 1
    groups = [RedriveGroup(reason=reason, redriven=c["redriven"], quarantined=c["quarantined"],
                           refused=c["refused"]) for reason, c in per_reason.items()]
    groups.sort(key=lambda g: -(g.redriven + g.quarantined + g.refused))
    results = [RedriveResult(id=d.letter.id, reason=d.letter.reason, outcome=d.outcome,
                             redrive_count=d.redrive_count, detail=d.detail) for d in decisions]
    return RedriveReport(dry_run=dry_run, redriven=outcomes["redriven"], quarantined=outcomes["quarantined"],
                         refused=outcomes["refused"], groups=groups, results=results)

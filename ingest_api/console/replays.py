"""Replay routes (admin scope): start a replay of a past window through a model version, read its figures."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Path
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from infra.kafka import ensure_topics, topic_name
from ingest_api.auth.dependencies import AdminPrincipal
from ingest_api.console.replay_runner import producer_send, run_replay
from ingest_api.console.shadow import VERSION_PATTERN
from ingest_api.deps import Services, ServicesDep
from ingest_api.errors import AUTH_ERRORS, ApiError, ErrorDetail, error_responses
from models.engine import InferenceEngine
from schemas import topics
from store import replay as stored

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/replays", tags=["models"])
_RUNNING: set[asyncio.Task[Any]] = set()  # keeps each background replay referenced until it ends


class ReplayRequest(BaseModel):
    """Which version to replay the logged features of [since, until) through."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"version": "v20261201-231012", "since": "2026-12-06T00:00:00Z", "until": "2026-12-07T00:00:00Z"}
    ]})

    version: str = Field(min_length=1, max_length=64, pattern=VERSION_PATTERN)
    since: AwareDatetime
    until: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> ReplayRequest:
        if self.until <= self.since:
            raise ValueError("until must be later than since")
        return self


class ReplayStatus(BaseModel):
    """A replay: running, or completed with its agreement against what was served, or failed."""

    replay_id: UUID
    model_version: str
    since: datetime
    until: datetime
    status: str
    rows: int
    exact_agreement: float | None = Field(
        default=None, description="Share of rows whose every served field matches bit for bit."
    )
    top3_agreement: float | None = Field(default=None, description="Share with the same ordered top 3.")
    top3_set_agreement: float | None = None
    propensity_spearman: float | None = Field(default=None, description="Rank correlation of propensity.")
    segment_agreement: float | None = Field(default=None, description="Share of rows with the same segment.")
    served_versions: dict[str, int] | None = None
    outcomes: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Live quality of the `served` and the `replayed` predictions on the same rows, labelled by the "
            "outcome join as of `as_of` (same labels for both): labelled, pending, buyers, auc, "
            "top20_buyers, top20_share, hr3 over `trials` attributed purchases (docs/outcomes.md)."
        ),
    )
    requested_by: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


async def _engine_for(services: Services, version: str) -> InferenceEngine:
    """The API's engine when it serves `version`, else the version loaded on its own (422 if unknown)."""
    if services.engine.model_version == version:
        return services.engine
    try:
        return await asyncio.to_thread(InferenceEngine.pinned, version, services.engine.registry.root)
    except KeyError as error:
        raise ApiError(422, f"unknown model version {version!r}",
                       details=[ErrorDetail(field="version", message=str(error.args[0]))]) from error


async def _run(services: Services, engine: InferenceEngine, request: ReplayRequest, replay_id: UUID,
               who: str) -> None:
    try:
        await ensure_topics(services.settings, (topics.PREDICTIONS_REPLAY,))
        send = producer_send(services.producer, topic_name(services.settings, topics.PREDICTIONS_REPLAY))
        await run_replay(services.sessionmaker, engine.score, request.version, request.since, request.until,
                         replay_id, send, who)
    except Exception:
        log.exception("replay failed", extra={"replay_id": str(replay_id)})


@router.post(
    "",
    status_code=202,
    summary="Replay a window through a model version",
    description=(
        "Re-scores the logged features of every prediction scored in [since, until) with `version`, one "
        "served micro-batch per engine call. Replayed predictions go to `predictions_replay` and "
        "`predictions-replay.v1`, never to served predictions or Redis. Answers 202 at once; poll "
        "GET /api/v1/replays/{replay_id} for the figures."
    ),
    responses=error_responses(*AUTH_ERRORS, 422),
)
async def start_replay(
    request: ReplayRequest, services: ServicesDep, principal: AdminPrincipal
) -> ReplayStatus:
    """Load the version, record the replay as running and run it in the background."""
    engine = await _engine_for(services, request.version)
    replay_id = uuid4()
    task = asyncio.create_task(_run(services, engine, request, replay_id, principal.subject))
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    for _ in range(50):  # the running row is written first thing; answer with it when it is there
        async with services.sessionmaker() as session:
            replay = await stored.get_replay(session, replay_id)
        if replay is not None:
            return ReplayStatus.model_validate(stored.replay_summary(replay))
        await asyncio.sleep(0.02)
    return ReplayStatus(replay_id=replay_id, model_version=request.version, since=request.since,
                        until=request.until, status="running", rows=0, requested_by=principal.subject)


@router.get(
    "/{replay_id}",
    summary="A replay's status and figures",
    description=(
        "`running`, then `completed` with the replayed rows and their agreement with what was served (top-3, "
        "propensity Spearman, segment, identical rows; served versions counted) and the outcome figures of "
        "both on the same customers, or `failed` with the error."
    ),
    responses=error_responses(*AUTH_ERRORS, 404, 422),
)
async def get_replay(
    replay_id: Annotated[UUID, Path(description="The id POST /api/v1/replays answered.")],
    services: ServicesDep, _: AdminPrincipal,
) -> ReplayStatus:
    """Read one replay."""
    async with services.sessionmaker() as session:
        replay = await stored.get_replay(session, replay_id)
    if replay is None:
        raise ApiError(404, f"no replay {replay_id}",
                       details=[ErrorDetail(field="replay_id", message="unknown")])
    return ReplayStatus.model_validate(stored.replay_summary(replay))

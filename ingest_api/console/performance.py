"""`GET /api/v1/models/performance`: live quality of model versions from joined outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from ingest_api.auth.dependencies import ReadPrincipal
from ingest_api.console.quality import QualitySettings, performance, shadow_of
from ingest_api.deps import ServicesDep
from ingest_api.errors import AUTH_ERRORS, ApiError, ErrorDetail, error_responses

router = APIRouter(prefix="/api/v1/models", tags=["models"])
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)
"""Window bounds accepted: far enough inside Postgres's range for the horizon to be added and taken."""


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ApiError(422, f"{name} must carry a timezone, e.g. 2026-12-01T00:00:00Z",
                       details=[ErrorDetail(field=name, message="timezone missing")])
    if not EARLIEST <= value < LATEST:
        raise ApiError(422, f"{name} must lie between 1970 and 9000",
                       details=[ErrorDetail(field=name, message="out of range")])
    return value


@router.get(
    "/performance",
    summary="Live model quality from outcomes",
    description=(
        "For predictions of `version` (default: the active version, with the shadow version's figures "
        "under `shadow`) scored in `[since, until)` (default: the last 90 days): realised propensity AUC, "
        "buyers in the top 20 % and lift, "
        "expected calibration error and a 10-bin reliability curve; recommender HR@3 overall and per "
        "product; "
        "how many predictions are labelled, pending or superseded and how many outcomes are unmatched; and a "
        "CBPE estimate from the propensities alone (only as good as the calibration). The join rule is in "
        "docs/outcomes.md."
    ),
    responses=error_responses(*AUTH_ERRORS, 422),
)
async def model_performance(
    services: ServicesDep,
    _: ReadPrincipal,
    version: Annotated[str | None, Query(min_length=1, max_length=64, pattern=VERSION_PATTERN)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Join and compute each requested version's figures."""
    settings = QualitySettings()
    now = datetime.now(UTC)
    until = _aware(until, "until") or now
    since = _aware(since, "since") or until - timedelta(days=90)
    if since >= until:
        raise ApiError(422, "since must be before until",
                       details=[ErrorDetail(field="since", message="not before until")])
    engine = services.engine
    document = await performance(services.sessionmaker, version or engine.model_version, since, until,
                                 settings.horizon, now)
    shadow = await shadow_of(engine) if version is None else None
    document["shadow"] = (
        await performance(services.sessionmaker, shadow, since, until, settings.horizon, now)
        if shadow else None
    )
    return document

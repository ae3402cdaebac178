"""Feature drift route: per-feature PSI of live traffic against the training bins, from the scorers."""

from __future__ import annotations

from fastapi import APIRouter

from ingest_api.auth.dependencies import ReadPrincipal
from ingest_api.console import scorer_stats
from ingest_api.console.scorer_stats import DriftReport
from ingest_api.deps import ServicesDep
from ingest_api.errors import AUTH_ERRORS, error_responses
from models.drift import PSI_FLAG

router = APIRouter(prefix="/api/v1/models", tags=["models"])


@router.get(
    "/drift",
    summary="Feature drift of live traffic",
    description=(
        "Per input feature, the population stability index (PSI) of the live scorers' rolling window of "
        f"traffic against the active version's training distribution (one bin per value); PSI above "
        f"{PSI_FLAG} is flagged. Most drifted first. When the stats store is slow or down the answer is "
        "still 200, with `state` `unavailable` and a `reason`."
    ),
    responses=error_responses(*AUTH_ERRORS),
)
async def drift_report(services: ServicesDep, _: ReadPrincipal) -> DriftReport:
    """Combine the scorers' drift fields."""
    return scorer_stats.drift_report(await scorer_stats.read_scorer_stats(services))

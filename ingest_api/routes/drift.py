"""Feature drift route: per-feature PSI of live traffic against the training bins, from the scorers."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, Field

from ingest_api.auth_deps import ReadPrincipal
from ingest_api.deps import RedisDep
from ingest_api.errors import AUTH_ERRORS, ApiError, error_responses
from ingest_api.scorer_stats import number, scorer_hashes
from models.drift import PSI_FLAG

router = APIRouter(prefix="/api/v1/models", tags=["models"])


class FeatureDrift(BaseModel):
    """One input feature's PSI over the live window (None until the window has enough rows)."""

    feature: str
    psi: float | None
    flagged: bool = Field(description=f"PSI above {PSI_FLAG}.")


class DriftReport(BaseModel):
    """Per-feature PSI, most drifted first, row-weighted over the live scorers."""

    threshold: float = PSI_FLAG
    model_version: str | None = Field(description="The version whose training bins are the reference.")
    window_rows: int = Field(description="Live rows in the scorers' windows, summed.")
    instances: int
    flagged: list[str] = Field(description="Features with PSI above the threshold, most drifted first.")
    features: list[FeatureDrift]


def combine(hashes: dict[str, dict[str, str]]) -> DriftReport:
    """Row-weighted mean PSI per feature over the instances that report drift."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    rows, versions, instances = 0, set(), 0
    for fields in hashes.values():
        if not fields.get("drift_psi"):
            continue
        weight = number(fields, "drift_window_rows") or 0.0
        instances += 1
        rows += int(weight)
        if fields.get("drift_model_version"):
            versions.add(fields["drift_model_version"])
        for feature, value in orjson.loads(fields["drift_psi"]).items():
            sums.setdefault(feature, 0.0)
            weights.setdefault(feature, 0.0)
            if value is not None and weight > 0:
                sums[feature] += value * weight
                weights[feature] += weight
    psi = {f: (sums[f] / weights[f] if weights[f] else None) for f in sums}
    ranked = sorted(psi.items(), key=lambda item: -(item[1] or 0.0))
    features = [FeatureDrift(feature=f, psi=v, flagged=v is not None and v > PSI_FLAG) for f, v in ranked]
    return DriftReport(
        model_version=", ".join(sorted(versions)) or None,
        window_rows=rows,
        instances=instances,
        flagged=[f.feature for f in features if f.flagged],
        features=features,
    )


@router.get(
    "/drift",
    summary="Feature drift of live traffic",
    description=(
        "Per input feature, the population stability index (PSI) of the live scorers' rolling window of "
        f"traffic against the active version's training distribution (one bin per value); PSI above "
        f"{PSI_FLAG} is flagged. Most drifted first."
    ),
    responses=error_responses(*AUTH_ERRORS, 503),
)
async def drift_report(redis: RedisDep, _: ReadPrincipal) -> DriftReport:
    """Combine the scorers' drift fields."""
    try:
        hashes = await scorer_hashes(redis)
    except Exception as error:
        raise ApiError(503, f"scorer stats unavailable: {type(error).__name__}") from None
    return combine(hashes)

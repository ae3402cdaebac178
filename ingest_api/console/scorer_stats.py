"""The live scorers' Redis stats hashes (stats:scorer:*, via infra.stats' index), and the shadow and drift
figures they carry.

One owner for the shadow comparison and the drift report: the two model routes and the dashboard all
build them here, from one read of the hashes. A slow or failed read is a state, never an error.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, Field

from infra.stats import indexed_stats_keys
from models.drift import PSI_FLAG

if TYPE_CHECKING:
    from ingest_api.deps import Services

log = logging.getLogger(__name__)
SCORER_STATS_PREFIX = "stats:scorer:"
READ_BUDGET_SECONDS = 0.5
"""The whole read (the index and the HGETALLs) gives up after this: stats are not worth more."""
FIGURES = ("top3_agreement", "propensity_spearman", "segment_agreement", "added_latency_ms",
           "active_inference_ms")
StatsRead = tuple[dict[str, dict[str, str]] | None, str | None]
"""The hashes by instance (None when unreadable) and, when unreadable, why."""


async def read_hashes(redis: Any, prefix: str) -> dict[str, dict[str, str]]:
    """Every live stats hash whose key starts with `prefix`, by full key, as text; a Redis failure raises."""
    keys = await indexed_stats_keys(redis, prefix)
    if not keys:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        hashes = await pipe.execute()
    return {_text(key): {_text(k): _text(v) for k, v in fields.items()}
            for key, fields in zip(keys, hashes, strict=True) if fields}


async def scorer_hashes(redis: Any) -> dict[str, dict[str, str]]:
    """Every live scorer instance's stats hash, by instance id, as text; a Redis failure raises."""
    hashes = await read_hashes(redis, SCORER_STATS_PREFIX)
    return {key.removeprefix(SCORER_STATS_PREFIX): fields for key, fields in hashes.items()}


async def read_scorer_stats(services: Services) -> StatsRead:
    """The hashes, or None and the reason when Redis is paused, slow or down (then paused a while)."""
    if services.redis_paused():
        return None, "scorer stats store unavailable: skipped after a recent failed read"
    try:
        return await asyncio.wait_for(scorer_hashes(services.redis), READ_BUDGET_SECONDS), None
    except Exception as error:  # a report: Redis trouble must not become a server error
        services.pause_redis()
        log.warning("scorer stats unreadable", extra={"error": repr(error)})
        return None, f"scorer stats store unavailable: {type(error).__name__}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def number(fields: dict[str, str], name: str) -> float | None:
    """A finite numeric stats field, or None when absent, empty or malformed."""
    try:
        value = float(fields[name]) if fields.get(name) else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _psi_by_feature(fields: dict[str, str]) -> dict[str, float | None]:
    """An instance's `drift_psi` field (feature -> PSI or None); ValueError when malformed."""
    decoded = orjson.loads(fields["drift_psi"])  # orjson.JSONDecodeError is a ValueError
    if not isinstance(decoded, dict) or not all(
        value is None or (type(value) in (int, float) and math.isfinite(value)) for value in decoded.values()
    ):
        raise ValueError("drift_psi is not an object of finite numbers or nulls")
    return {str(feature): None if value is None else float(value) for feature, value in decoded.items()}


def _unreadable(instance: str, what: str, error: Exception) -> None:
    log.warning("a scorer's stats entry is malformed; reported as unavailable",
                extra={"instance": instance, "entry": what, "error": repr(error)[:200]})


class ShadowInstance(BaseModel):
    """One live scorer's comparison of the shadow with the active version (rolling window)."""

    instance: str
    shadow_version: str | None
    rows: int = Field(description="Rows this scorer has scored with the shadow since it was set.")
    top3_agreement: float | None = Field(description="Mean share of the active top-3 the shadow shares.")
    propensity_spearman: float | None = Field(description="Rank correlation of the two propensities.")
    segment_agreement: float | None = Field(description="Share of rows given the same segment label.")
    added_latency_ms: float | None = Field(description="Median time the shadow stage adds to a batch.")
    active_inference_ms: float | None = Field(description="Median active inference time of a batch.")


class ShadowStatus(BaseModel):
    """The shadow version and its live comparison, row-weighted over the scorers shadowing it."""

    active: str
    shadow: str | None = Field(description="The registry's shadow version (None: not shadowing).")
    state: Literal["live", "no_shadow", "no_live_traffic", "unavailable"] = Field(
        default="no_live_traffic",
        description="`live`: figures below; `no_shadow`: none set; `no_live_traffic`: no scorer has "
        "scored with it yet; `unavailable`: the scorers' stats store could not be read (see `reason`).",
    )
    reason: str | None = Field(default=None, description="Why the comparison is unavailable.")
    unavailable_instances: list[str] = Field(
        default_factory=list, description="Scorers whose stats entry could not be read (left out).")
    rows: int = 0
    top3_agreement: float | None = None
    propensity_spearman: float | None = None
    segment_agreement: float | None = None
    added_latency_ms: float | None = None
    active_inference_ms: float | None = None
    instances: list[ShadowInstance] = Field(default_factory=list)


def shadow_status(active: str, shadow: str | None, read: StatsRead) -> ShadowStatus:
    """The comparison from the hashes: row-weighted means of the instances shadowing `shadow`."""
    hashes, reason = read
    if hashes is None:
        return ShadowStatus(active=active, shadow=shadow, state="unavailable", reason=reason)
    instances, unreadable = [], []
    for name, fields in hashes.items():
        if not fields.get("shadow_version"):
            continue
        try:
            instances.append(ShadowInstance(
                instance=name,
                shadow_version=fields["shadow_version"],
                rows=int(number(fields, "shadow_rows") or 0),
                **{figure: number(fields, f"shadow_{figure}") for figure in FIGURES},
            ))
        except ValueError as error:  # pydantic's ValidationError is one
            _unreadable(name, "shadow", error)
            unreadable.append(name)
    status = ShadowStatus(active=active, shadow=shadow, instances=instances, unavailable_instances=unreadable)
    live = [i for i in instances if i.shadow_version == shadow and i.rows > 0]
    status.rows = sum(i.rows for i in live)
    for name in FIGURES:
        pairs = [(getattr(i, name), i.rows) for i in live if getattr(i, name) is not None]
        weight = sum(w for _, w in pairs)
        setattr(status, name, sum(v * w for v, w in pairs) / weight if weight else None)
    status.state = "no_shadow" if shadow is None else ("live" if status.rows else "no_live_traffic")
    return status


class FeatureDrift(BaseModel):
    """One input feature's PSI over the live window (None until the window has enough rows)."""

    feature: str
    psi: float | None
    flagged: bool = Field(description=f"PSI above {PSI_FLAG}.")


class DriftReport(BaseModel):
    """Per-feature PSI, most drifted first, row-weighted over the live scorers."""

    threshold: float = PSI_FLAG
    state: Literal["live", "warming_up", "no_live_traffic", "unavailable"] = Field(
        default="live",
        description="`live`: PSI below; `warming_up`: scorers report rows but too few (or no training "
        "bins) for a PSI; `no_live_traffic`: no scorer reports any; `unavailable`: the scorers' stats "
        "store could not be read (see `reason`).",
    )
    reason: str | None = Field(default=None, description="Why the figures are unavailable.")
    unavailable_instances: list[str] = Field(
        default_factory=list, description="Scorers whose stats entry could not be read (left out).")
    model_version: str | None = Field(description="The version whose training bins are the reference.")
    window_rows: int = Field(description="Live rows in the scorers' windows, summed.")
    instances: int
    flagged: list[str] = Field(description="Features with PSI above the threshold, most drifted first.")
    features: list[FeatureDrift]


def drift_report(read: StatsRead) -> DriftReport:
    """Row-weighted mean PSI per feature over the instances that report drift."""
    hashes, reason = read
    if hashes is None:
        return DriftReport(state="unavailable", reason=reason, model_version=None, window_rows=0,
                           instances=0, flagged=[], features=[])
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    rows, versions, instances, unreadable = 0, set(), 0, []
    for name, fields in hashes.items():
        if not fields.get("drift_psi"):
            continue
        try:
            by_feature = _psi_by_feature(fields)
        except ValueError as error:
            _unreadable(name, "drift", error)
            unreadable.append(name)
            continue
        weight = max(0.0, number(fields, "drift_window_rows") or 0.0)
        instances += 1
        rows += int(weight)
        if fields.get("drift_model_version"):
            versions.add(fields["drift_model_version"])
        for feature, value in by_feature.items():
            sums.setdefault(feature, 0.0)
            weights.setdefault(feature, 0.0)
            if value is not None and weight > 0:
                sums[feature] += value * weight
                weights[feature] += weight
    psi = {f: (sums[f] / weights[f] if weights[f] else None) for f in sums}
    ranked = sorted(psi.items(), key=lambda item: -(item[1] or 0.0))
    features = [FeatureDrift(feature=f, psi=v, flagged=v is not None and v > PSI_FLAG) for f, v in ranked]
    measured = any(f.psi is not None for f in features)
    state: Literal["live", "warming_up", "no_live_traffic"] = (
        "no_live_traffic" if not rows else ("live" if measured else "warming_up")
    )
    return DriftReport(
        state=state,
        unavailable_instances=unreadable,
        model_version=", ".join(sorted(versions)) or None,
        window_rows=rows,
        instances=instances,
        flagged=[f.feature for f in features if f.flagged],
        features=features,
    )


async def current_shadow(services: Services, read: StatsRead) -> ShadowStatus:
    """The registry's active and shadow pointers with the comparison from `read`."""
    registry = services.engine.registry
    active, shadow = await asyncio.to_thread(lambda: (registry.active_version(), registry.shadow_version()))
    return shadow_status(active, shadow, read)

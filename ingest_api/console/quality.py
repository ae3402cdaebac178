"""Live model quality: the outcome join (store) through the metric math (models), gauges and the alert."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.rounds import sleep_or_stop
from models import live_quality
from store.outcome_join import Joined, join_outcomes
from store.outcome_links import refresh_links
from store.prediction_chunks import refresh_chunks

log = logging.getLogger(__name__)


class QualitySettings(BaseSettings):
    """The outcome horizon and the quality alert (environment, prefix STREAMSCORE_)."""

    model_config = SettingsConfigDict(env_prefix="STREAMSCORE_", extra="ignore")

    outcome_horizon_seconds: int = Field(
        default=90 * 86400, ge=1, description="How long after a prediction an outcome still counts for it."
    )
    quality_lookback_seconds: int = Field(
        default=180 * 86400, ge=60, description="Window of predictions the gauges and the alert read."
    )
    quality_alert_last_n: int = Field(default=1000, ge=10, description="Alert on the last N labelled.")
    quality_alert_margin: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Alert when a figure is this far below validation."
    )
    quality_interval_seconds: float = Field(
        default=300.0, gt=0,
        description="How often the gauges refresh (each refresh joins the lookback window once per version).",
    )

    @property
    def horizon(self) -> timedelta:
        """The horizon as a timedelta."""
        return timedelta(seconds=self.outcome_horizon_seconds)


def figures(joined: Joined) -> dict[str, Any]:
    """The performance document of joined rows (models.live_quality)."""
    return live_quality.quality(joined.status, joined.propensity, joined.trial_products, joined.trial_hits,
                                joined.unmatched)


async def performance(
    sessionmaker: async_sessionmaker[AsyncSession], version: str, since: datetime, until: datetime,
    horizon: timedelta, as_of: datetime | None = None,
) -> dict[str, Any]:
    """One version's live quality over predictions scored in [since, until), labelled as of `as_of`."""
    as_of = as_of or datetime.now(UTC)
    await refresh_chunks(sessionmaker)  # pack what the sink stored since (a no-op below REFRESH_MIN_ROWS)
    await refresh_links(sessionmaker, horizon)
    async with sessionmaker() as session, session.begin():
        joined = await join_outcomes(session, version, since, until, horizon, as_of)
    return {"version": version, "since": since, "until": until, "as_of": as_of,
            "horizon_seconds": horizon.total_seconds(), **figures(joined)}


def recent(joined: Joined, n: int) -> tuple[float | None, float | None, int]:
    """Realised AUC and HR@3 over the last n labelled predictions (and trials of predictions since then)."""
    mask = live_quality.last_labelled(joined.status, joined.scored, n)
    labelled = int(mask.sum())
    if not labelled:
        return None, None, 0
    y = (joined.status[mask] == live_quality.POSITIVE).astype(np.int64)
    auc = live_quality.propensity_quality(y, joined.propensity[mask])["auc"]
    cut = float(joined.scored[mask].min())
    trials = joined.trial_scored >= cut
    hits = joined.trial_hits[trials]
    hr3 = float(hits.mean()) if hits.size else None
    return auc, hr3, labelled


def validation_figures(manifest: dict[str, Any]) -> tuple[float | None, float | None]:
    """The manifest's validation AUC and served recommender HR@3."""
    metrics = manifest.get("metrics", {})
    auc = metrics.get("propensity", {}).get("auc")
    hr3 = metrics.get("recommender", {}).get("dqn", {}).get("hr3")
    return auc, hr3


class QualityGauges:
    """Gauges of live quality per version, in the API's metrics registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.value = Gauge("streamscore_model_quality", "Live model quality figure per version.",
                           ("version", "figure"), registry=registry)
        self.alert = Gauge("streamscore_model_quality_alert",
                           "1 while the version's realised AUC or HR@3 over the last N labelled is more than "
                           "the margin below its validation figure.", ("version",), registry=registry)

    def record(self, version: str, document: dict[str, Any]) -> None:
        """Set a version's gauges from its performance document (missing figures: NaN)."""
        flat = {
            "labelled": document["labelled"], "pending": document["pending"],
            "unmatched": document["unmatched"], "auc": document["propensity"]["auc"],
            "top20_buyers": document["propensity"]["top20_buyers"], "lift": document["propensity"]["lift"],
            "ece": document["propensity"]["ece"], "hr3": document["recommender"]["hr3"],
            "estimated_auc": document["estimated"]["auc"],
        }
        for name, value in flat.items():
            self.value.labels(version, name).set(float("nan") if value is None else float(value))


def check_alert(version: str, manifest: dict[str, Any], joined: Joined, settings: QualitySettings,
                gauges: QualityGauges | None = None) -> bool:
    """Flip the alert gauge and log a WARNING when recent AUC or HR@3 falls below validation - margin."""
    auc, hr3, labelled = recent(joined, settings.quality_alert_last_n)
    valid_auc, valid_hr3 = validation_figures(manifest)
    margin = settings.quality_alert_margin
    enough = labelled >= settings.quality_alert_last_n
    low_auc = enough and auc is not None and valid_auc is not None and auc < valid_auc - margin
    low_hr3 = enough and hr3 is not None and valid_hr3 is not None and hr3 < valid_hr3 - margin
    firing = bool(low_auc or low_hr3)
    if gauges is not None:
        gauges.alert.labels(version).set(1.0 if firing else 0.0)
    if firing:
        log.warning(
            "model quality below validation",
            extra={"model_version": version, "labelled": labelled, "auc": auc, "validation_auc": valid_auc,
                   "hr3": hr3, "validation_hr3": valid_hr3, "margin": margin},
        )
    return firing


async def refresh(sessionmaker: async_sessionmaker[AsyncSession], versions: dict[str, dict[str, Any]],
                  settings: QualitySettings, gauges: QualityGauges) -> dict[str, bool]:
    """Recompute every version's gauges and alert once; version -> alert firing."""
    now = datetime.now(UTC)
    since = now - timedelta(seconds=settings.quality_lookback_seconds)
    await refresh_chunks(sessionmaker)
    await refresh_links(sessionmaker, settings.horizon)
    firing: dict[str, bool] = {}
    for version, manifest in versions.items():
        async with sessionmaker() as session, session.begin():
            joined = await join_outcomes(session, version, since, now, settings.horizon, now)
        gauges.record(version, figures(joined))
        firing[version] = check_alert(version, manifest, joined, settings, gauges)
    return firing


async def shadow_of(engine: Any) -> str | None:
    """The registry's shadow version (the API's engine loads only the active one, so it is read from the
    pointer the scorers follow), or None."""
    shadow: str | None = await asyncio.to_thread(engine.registry.shadow_version)
    return shadow if shadow != engine.model_version else None


async def monitor_forever(services: Any, registry: CollectorRegistry) -> None:
    """Background task of the API: refresh the active and shadow versions' gauges every interval."""
    settings = QualitySettings()
    gauges = QualityGauges(registry)
    while True:
        engine = services.engine
        versions = {engine.model_version: engine.manifest}
        with contextlib.suppress(Exception):
            if (shadow := await shadow_of(engine)) is not None:
                versions[shadow] = await asyncio.to_thread(engine.registry.manifest, shadow)
        try:
            await refresh(services.sessionmaker, versions, settings, gauges)
        except Exception as error:  # Postgres down: /ready says so; the next round tries again
            log.warning("model quality refresh failed", extra={"error": repr(error)[:300]})
        await sleep_or_stop(settings.quality_interval_seconds)

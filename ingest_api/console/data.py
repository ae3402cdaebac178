"""The dashboard's figures: live pipeline stats (Redis hashes), model metrics, recent rows (Postgres)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from ingest_api.console.model_metrics import model_summary
from ingest_api.console.scorer_stats import (
    READ_BUDGET_SECONDS,
    SCORER_STATS_PREFIX,
    DriftReport,
    ShadowStatus,
    number,
    read_hashes,
)
from schemas.jobs import JobStatus
from schemas.wire import iso_utc
from store import batch_jobs, predictions

log = logging.getLogger(__name__)

STATS_KEY_PREFIXES = {"scorer": SCORER_STATS_PREFIX, "sink": "stats:sink:"}
COUNTERS = ("events_in", "events_out", "dlq", "batches", "lag", "in_flight")


class RoleStats(BaseModel):
    """One pipeline role (scorer or sink) summed over its live instances."""

    instances: int = 0
    events_in: int = Field(default=0, description="Records taken in since each live instance started.")
    events_out: int = Field(default=0, description="Records scored (stored) since each instance started.")
    dlq: int = 0
    batches: int = 0
    lag: int = Field(default=0, description="Consumer lag summed over partitions and instances; -1 when an "
                     "instance could not tell (broker unreachable).")
    in_flight: int = Field(default=0, description="Records past the consumer's position whose batch has not "
                           "committed yet (being scored or stored); the lag does not count them.")
    p50_ms: float = Field(default=0.0, description="Highest instance p50 (scorer: inference; sink: write).")
    p99_ms: float = Field(default=0.0, description="Highest instance p99.")
    rate_in: float = Field(default=0.0, description="events_in per second, from successive samples.")
    rate_out: float = Field(default=0.0, description="events_out per second, from successive samples.")
    guarantee: str = Field(default="", description="Scorer: its STREAMSCORE_PROCESSING_GUARANTEE "
                           "(at-least-once, exactly-once; `mixed` when instances differ).")


class InstanceStats(BaseModel):
    """One live scorer or sink process, as its Redis stats hash says."""

    role: str
    instance: str
    events_in: int
    events_out: int
    dlq: int
    lag: int
    in_flight: int = 0
    p50_ms: float
    p99_ms: float
    rate_in: float
    rate_out: float
    age_s: float = Field(description="Seconds since the instance last wrote its stats.")


class DashboardStats(BaseModel):
    """Everything the dashboard page shows, in one poll."""

    generated_at: float
    scorer: RoleStats
    sink: RoleStats
    instances: list[InstanceStats]
    model: dict[str, Any]
    segments: dict[str, int]
    recent_predictions: list[dict[str, Any]]
    trace_url_template: str | None = Field(
        default=None, description="STREAMSCORE_TRACE_URL_TEMPLATE: `{trace_id}` in it names a prediction's "
        "trace (`trace_id`, null when it was not sampled) in the trace viewer.")
    batches: list[dict[str, Any]]
    shadow: ShadowStatus = Field(description="As GET /api/v1/models/shadow answers.")
    drift: DriftReport = Field(description="As GET /api/v1/models/drift answers.")


@dataclass
class _Sample:
    updated_at: float
    events_in: int
    events_out: int
    rate_in: float = 0.0
    rate_out: float = 0.0


class RateTracker:
    """Per-instance rates from successive counter samples, keyed by the writer's own timestamp.

    Using the instance's `updated_at` (not the poll time) keeps rates right however often, and by
    however many browsers, the endpoint is polled; a restarted instance (counters reset) reads as 0.
    """

    def __init__(self) -> None:
        self._samples: dict[str, _Sample] = {}

    def update(self, key: str, updated_at: float, events_in: int, events_out: int) -> _Sample:
        """Record a sample and return it with its rates."""
        previous = self._samples.get(key)
        sample = _Sample(updated_at, events_in, events_out)
        if previous is not None:
            elapsed = updated_at - previous.updated_at
            if elapsed <= 0:
                return previous
            sample.rate_in = max(0, events_in - previous.events_in) / elapsed
            sample.rate_out = max(0, events_out - previous.events_out) / elapsed
        self._samples[key] = sample
        return sample

    def forget_except(self, keys: set[str]) -> None:
        """Drop instances that no longer report."""
        for key in set(self._samples) - keys:
            del self._samples[key]


def _number(fields: dict[str, str], name: str) -> float:
    return number(fields, name) or 0.0


async def pipeline_stats(
    redis: Any, tracker: RateTracker
) -> tuple[dict[str, RoleStats], list[InstanceStats]]:
    """Sum the live scorer/sink stats hashes and derive throughput from successive samples."""
    roles = {role: RoleStats() for role in STATS_KEY_PREFIXES}
    instances: list[InstanceStats] = []
    seen: set[str] = set()
    now = time.time()
    for role, prefix in STATS_KEY_PREFIXES.items():
        hashes = await read_hashes(redis, prefix)
        total = roles[role]
        for name, fields in hashes.items():
            seen.add(name)
            counters = {counter: int(_number(fields, counter)) for counter in COUNTERS}
            updated_at = _number(fields, "updated_at")
            sample = tracker.update(name, updated_at, counters["events_in"], counters["events_out"])
            p50, p99 = _number(fields, "p50_ms"), _number(fields, "p99_ms")
            total.instances += 1
            for counter in COUNTERS:
                setattr(total, counter, getattr(total, counter) + counters[counter])
            if counters["lag"] < 0 or total.lag < 0:  # an instance could not ask its broker
                total.lag = -1
            total.p50_ms, total.p99_ms = max(total.p50_ms, p50), max(total.p99_ms, p99)
            total.rate_in += sample.rate_in
            total.rate_out += sample.rate_out
            if guarantee := fields.get("processing_guarantee", ""):
                total.guarantee = guarantee if total.guarantee in ("", guarantee) else "mixed"
            instances.append(InstanceStats(
                role=role, instance=name.split(":", 2)[-1], p50_ms=p50, p99_ms=p99,
                rate_in=sample.rate_in, rate_out=sample.rate_out, age_s=max(0.0, now - updated_at),
                **{c: counters[c] for c in ("events_in", "events_out", "dlq", "lag", "in_flight")},
            ))
    tracker.forget_except(seen)
    return roles, instances


def _iso(value: Any) -> Any:
    """ISO 8601 with `Z` for UTC, as the API writes timestamps everywhere."""
    return iso_utc(value) if isinstance(value, datetime) else value


class SegmentCounts:
    """The active version's segment counts, reused for `ttl_s`: counting scans every segment of the
    version (90-120 ms at 1,000,000 customers), and every open dashboard tab polls once a second."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._cached: tuple[str, float, dict[str, int]] | None = None

    async def get(self, session: AsyncSession, version: str) -> dict[str, int]:
        """Counts by label (high, medium, low always present) at most `ttl_s` old."""
        cached = self._cached
        if cached is not None and cached[0] == version and time.monotonic() - cached[1] < self.ttl_s:
            return cached[2]
        counts = {"high": 0, "medium": 0, "low": 0} | await predictions.segment_counts(session, version)
        self._cached = (version, time.monotonic(), counts)
        return counts


async def dashboard_stats(
    session: AsyncSession, redis: Any, tracker: RateTracker, registry_root: str | None, version: str,
    shadow: ShadowStatus, drift: DriftReport, counts: SegmentCounts, trace_url_template: str | None = None,
) -> DashboardStats:
    """Gather every dashboard figure in one round; Redis or registry trouble leaves the rest standing."""
    try:
        roles, instances = await asyncio.wait_for(pipeline_stats(redis, tracker), READ_BUDGET_SECONDS)
    except Exception as error:  # Redis down: the rest of the dashboard still answers
        log.warning("dashboard could not read pipeline stats", extra={"error": str(error)})
        roles, instances = {role: RoleStats() for role in STATS_KEY_PREFIXES}, []
    try:
        model = await asyncio.to_thread(model_summary, registry_root, version)
    except (OSError, KeyError, ValueError) as error:
        model = {"version": version, "metrics": {}, "gains": [], "error": str(error)}
    segments = await counts.get(session, version)
    recent = await predictions.recent_predictions(session, 20)
    batches = await batch_jobs.recent_batch_jobs(session, 10)
    return DashboardStats(
        generated_at=time.time(),
        shadow=shadow,
        drift=drift,
        scorer=roles["scorer"],
        sink=roles["sink"],
        instances=instances,
        model=model,
        segments=segments,
        recent_predictions=[
            {"event_id": str(p.event_id), "customer_id": p.customer_id, "model_version": p.model_version,
             "source": p.source, "propensity": p.propensity, "segment": p.segment_label,
             "segment_score": p.segment_score, "top": (p.recommendations or [{}])[0],
             "scored_at": _iso(p.scored_at), "trace_id": p.trace_id}
            for p in recent
        ],
        trace_url_template=trace_url_template,
        batches=[
            {"task_id": str(b.task_id), "status": b.status, "filename": b.filename,
             "rows_valid": b.rows_valid, "rows_invalid": b.rows_invalid, "rows_scored": b.rows_scored,
             "rows_dead": b.rows_dead,
             "progress": (b.rows_scored + b.rows_dead) / b.rows_valid if b.rows_valid else
             (1.0 if b.status == JobStatus.COMPLETED else 0.0),
             "created_at": _iso(b.created_at), "finished_at": _iso(b.finished_at)}
            for b in batches
        ],
    )

"""The live dashboard: a static page (public) and its data endpoint (scope `read`), kept thin."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from ingest_api.auth.dependencies import ReadPrincipal
from ingest_api.console import data, scorer_stats
from ingest_api.console.data import DashboardStats, RateTracker, SegmentCounts
from ingest_api.deps import RedisDep, ServicesDep, SessionDep

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
            "form-action 'self'")
"""Only this server's own script, styles and stats: an injected script or beacon has nowhere to run or go."""

router = APIRouter(tags=["ops"])


def _tracker(request: Request) -> RateTracker:
    tracker: RateTracker | None = getattr(request.app.state, "dashboard_rates", None)
    if tracker is None:
        tracker = request.app.state.dashboard_rates = RateTracker()
    return tracker


def _counts(request: Request, ttl_s: float) -> SegmentCounts:
    counts: SegmentCounts | None = getattr(request.app.state, "dashboard_counts", None)
    if counts is None:
        counts = request.app.state.dashboard_counts = SegmentCounts(ttl_s)
    return counts


@router.get(
    "/api/v1/dashboard/stats",
    response_model=DashboardStats,
    summary="Live pipeline, model and batch figures for the dashboard",
    description="Throughput, lag and latency of the live scorer/sink instances (their Redis stats hashes), "
    "segment counts and the latest predictions of the active model, recent batch tasks, and the active "
    "model's validation metrics with its gains curve, the shadow comparison and the feature drift (as "
    "`/api/v1/models/shadow` and `/api/v1/models/drift` answer them). Scope `read`. The segment counts "
    "are reused for `dashboard_counts_ttl_s` (10 s).",
)
async def dashboard_stats(
    request: Request, services: ServicesDep, session: SessionDep, redis: RedisDep, _: ReadPrincipal
) -> DashboardStats:
    """Gather the dashboard figures in one round."""
    settings, version = services.settings, services.engine.model_version
    read = await scorer_stats.read_scorer_stats(services)  # one read for both panels
    shadow, drift = await scorer_stats.current_shadow(services, read), scorer_stats.drift_report(read)
    return await data.dashboard_stats(session, redis, _tracker(request), settings.model_registry,
                                                version, shadow, drift,
                                                _counts(request, settings.dashboard_counts_ttl_s),
                                                settings.trace_url_template)


@router.get("/dashboard", include_in_schema=False)
async def dashboard_page() -> FileResponse:
    """The dashboard page; it asks for an API key (a form; kept in the page's memory) and polls the stats."""
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP})


@router.get("/dashboard/{name}", include_in_schema=False)
async def dashboard_asset(name: str) -> FileResponse:
    """The page's script and stylesheet (no build step, no CDN)."""
    if name not in STATIC_FILES:
        raise HTTPException(404, detail=f"no dashboard asset {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "no-cache"})

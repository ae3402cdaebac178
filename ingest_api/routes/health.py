"""Operations routes without auth: liveness, readiness of the dependencies, Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from ingest_api.bodies import DependencyStatus, Liveness, Readiness
from ingest_api.deps import Services, ServicesDep

router = APIRouter(tags=["ops"])

CHECK_TIMEOUT_S = 2.0


async def _timed(check: Callable[[], Awaitable[Any]]) -> DependencyStatus:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return DependencyStatus(ok=False, error=f"no answer within {CHECK_TIMEOUT_S:.0f}s")
    except Exception as error:
        return DependencyStatus(ok=False, error=f"{type(error).__name__}: {str(error)[:200]}")
    return DependencyStatus(ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2))


async def _database(services: Services) -> None:
    async with services.db_engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _broker(services: Services) -> None:
    # A metadata request goes to a live broker; cached metadata would hide an outage.
    metadata = await services.producer.client.fetch_all_metadata()
    if not metadata.brokers():
        raise ConnectionError("the broker returned no brokers")


@router.get(
    "/health",
    summary="Liveness",
    description="200 while the process runs; checks nothing else (see /ready).",
)
async def health() -> Liveness:
    """The process is alive."""
    return Liveness()


@router.get(
    "/ready",
    summary="Readiness",
    description="Checks the broker, Postgres and Redis (2 s timeout each); 503 with per-dependency status "
                "when any is down.",
    responses={503: {"model": Readiness, "description": "A dependency is unavailable (see `dependencies`)."}},
)
async def ready(services: ServicesDep, response: Response) -> Readiness:
    """Probe every dependency concurrently."""
    broker, database, redis = await asyncio.gather(
        _timed(lambda: _broker(services)),
        _timed(lambda: _database(services)),
        _timed(services.redis.ping),
    )
    dependencies = {"broker": broker, "database": database, "redis": redis}
    ok = all(status.ok for status in dependencies.values())
    if not ok:
        response.status_code = 503
    return Readiness(status="ready" if ok else "unavailable", model_version=services.engine.model_version,
                     dependencies=dependencies)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Request counts and latency histograms per route template, dynamic-batch sizes.",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """The exposition text."""
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)

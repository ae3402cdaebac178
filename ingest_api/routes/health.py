"""Operations routes: liveness and readiness (public), Prometheus metrics (scraper token or scope `read`)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import text

from infra.kafka import any_broker_answers
from ingest_api.auth.dependencies import api_key_scheme, authorize, oauth2_scheme
from ingest_api.auth.middleware import principal_of
from ingest_api.auth.principals import ANONYMOUS
from ingest_api.bodies import DependencyStatus, Liveness, Readiness
from ingest_api.deps import Services, ServicesDep

router = APIRouter(tags=["ops"])
READY_PATH = "/ready"

READY_DEADLINE_S = 1.0
"""/ready answers within this, whatever its dependencies do (each check is cut off at it)."""
log = logging.getLogger(__name__)


async def _timed(check: Callable[[], Awaitable[Any]]) -> DependencyStatus:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), READY_DEADLINE_S)
    except TimeoutError:
        return DependencyStatus(ok=False, error=f"no answer within {READY_DEADLINE_S:.1f}s")
    except Exception as error:
        return DependencyStatus(ok=False, error=f"{type(error).__name__}: {str(error)[:200]}")
    return DependencyStatus(ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2))


async def _database(services: Services) -> None:
    async with services.db_engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _broker(services: Services) -> None:
    # A metadata request goes to every known broker; cached metadata would hide an outage. Ready while
    # any answers: one broker of a cluster down still leaves the events accepted.
    try:
        await any_broker_answers(services.producer.client)
    except Exception as error:
        guard = services.topics
        if not guard.connection.up:  # its probe named the cause (a setting, or
            raise ConnectionError(guard.connection.reason) from error  # each address's error)
        raise


async def _topics(services: Services) -> None:
    # The guard's last look (it recreates lost topics): events sent now would reach the scorer.
    guard = services.topics
    if not guard.connection.up:
        # Its last look predates the outage: a broker back empty may not have the topics again yet.
        raise LookupError("not checked since the broker became unreachable")
    if not guard.checked:
        await guard.check()
    if guard.problems:
        raise LookupError("; ".join(f"{name} {problem}" for name, problem in sorted(guard.problems.items())))


async def _with_credentials(request: Request) -> bool:
    """True when the request carries valid credentials (only then are error details answered)."""
    try:
        # The middleware started the lookup with the caller's own address: random keys from one
        # client must not hide details from monitors.
        principal = await asyncio.wait_for(principal_of(request.scope["state"]), READY_DEADLINE_S)
    except Exception:
        return False
    return principal is not ANONYMOUS


@router.get(
    "/health",
    summary="Liveness",
    description="200 while the process runs; checks nothing else (see /ready).",
)
async def health() -> Liveness:
    """The process is alive."""
    return Liveness()


@router.get(
    READY_PATH,
    summary="Readiness",
    description="Checks the broker, its topics, Postgres and Redis concurrently and answers within 1 s; "
                "503 when any is down. Per dependency only an `ok` flag, unless the request carries valid "
                "credentials (then also latency and error); the detail is logged either way.",
    responses={503: {"model": Readiness, "description": "A dependency is unavailable (see `dependencies`)."}},
)
async def ready(request: Request, services: ServicesDep, response: Response) -> Readiness:
    """Probe every dependency concurrently."""
    broker, topic_status, database, redis, detailed = await asyncio.gather(
        _timed(lambda: _broker(services)),
        _timed(lambda: _topics(services)),
        _timed(lambda: _database(services)),
        _timed(services.redis_probe.ping),
        _with_credentials(request),
    )
    dependencies = {"broker": broker, "topics": topic_status, "database": database, "redis": redis}
    ok = all(status.ok for status in dependencies.values())
    if not ok:
        response.status_code = 503
        log.warning("not ready", extra={name: status.error for name, status in dependencies.items()
                                        if not status.ok})
    if not detailed:
        dependencies = {name: DependencyStatus(ok=status.ok) for name, status in dependencies.items()}
    return Readiness(status="ready" if ok else "unavailable", model_version=services.engine.model_version,
                     dependencies=dependencies)


async def _metrics_reader(
    request: Request,
    services: ServicesDep,
    bearer: Annotated[str | None, Depends(oauth2_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> None:
    """The scraper's token (STREAMSCORE_METRICS_TOKEN, as a bearer token), or any principal with `read`."""
    token = services.settings.metrics_token
    secret = token.get_secret_value() if token is not None else ""
    if secret and bearer is not None and hmac.compare_digest(bearer.encode(), secret.encode()):
        return
    await authorize(request.app.state.security, request.scope["state"], "read")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Request counts and latency histograms per route template, dynamic-batch sizes. Needs "
                "`Authorization: Bearer <STREAMSCORE_METRICS_TOKEN>` or a credential with scope `read`; "
                "the text is rendered at most once a second.",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    dependencies=[Depends(_metrics_reader)],
)
async def metrics(request: Request) -> Response:
    """The exposition text."""
    body, content_type = await request.app.state.metrics.render_cached()
    return Response(body, media_type=content_type)

"""The FastAPI app factory: lifespan-built clients, middleware, error handlers, routers, and `run()`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra import tracing
from infra.database import create_engine, create_sessionmaker
from infra.kafka import TopicGuard, ensure_topics, producer_options, resolve_idempotence
from infra.kafka_connection import connection_options
from infra.kafka_diagnosis import preflight
from infra.logging import configure_logging
from infra.process import bounded, cancel_tasks
from ingest_api.auth import routes as auth
from ingest_api.batch import routes as batch
from ingest_api.batching import DirectScorer, DynamicBatcher
from ingest_api.console import (
    dashboard,
    dead_letters,
    docs,
    drift,
    performance,
    registry,
    replays,
    shadow,
)
from ingest_api.console.quality import monitor_forever
from ingest_api.deps import Services, build_redis
from ingest_api.errors import error_response, install_error_handlers
from ingest_api.fast_path import FastPathMiddleware
from ingest_api.hardening import SecurityHeadersMiddleware
from ingest_api.metrics import ApiMetrics, MetricsMiddleware
from ingest_api.publisher import BackgroundPublisher
from ingest_api.routes import events, health, outcomes, predictions, scoring
from ingest_api.settings import ApiSettings
from ingest_api.tracing_middleware import TracingMiddleware
from schemas import topics

if TYPE_CHECKING:
    from models.engine import InferenceEngine

log = logging.getLogger(__name__)

BATCH_UPLOAD_PATH = "/api/v1/predict/batch"
# A valid request to these is under 2 KB: they get their own small body limit (max_score_json_bytes).
SMALL_BODY_PATHS = frozenset({"/api/v1/predict/single", "/api/v1/segment", "/api/v1/auth/token"})
DESCRIPTION = """\
Ingest customer feature events, upload CSV batches and score customers synchronously.

* **Events** (`POST /api/v1/events`) go to Kafka (`customer-features.v1`); the scorer and sink store
  each event exactly once (by `event_id`) in Postgres and Redis.
* **Batches** (`POST /api/v1/predict/batch`) are CSV uploads, parsed as a stream; follow progress at
  `GET /api/v1/predict/batch/{task_id}` and fetch results as JSON lines or CSV.
* **Sync scoring** (`POST /api/v1/predict/single`, `POST /api/v1/segment`) scores in-process.

Every route except `/health` and `/ready` needs a Bearer JWT (`POST /api/v1/auth/token`) or
an `X-API-Key`, holding the route's scope (`/metrics` also takes `STREAMSCORE_METRICS_TOKEN`). Errors
always look like `{"error": {"status", "code", "message", "details": [{"field", "message"}]}}`; a bad
feature names its position, column and range, e.g. `[3].features[3] (MGEMLEEF)`: `must be 1–6; got 9`.

**Delivery.** `202` from `/events` means the broker acknowledged every record (acks=all). A request
is all-or-nothing for validation; if the broker fails mid-request you get `503` and should retry:
events that carry an `event_id` are stored once however often they are sent.

**Limits** (settings, prefix `STREAMSCORE_`): request line and headers `MAX_HEADER_BYTES` (32 KiB)
→ 431; credentials are checked before any body byte is read; JSON bodies `MAX_JSON_BYTES` (16 MiB),
scoring and sign-in bodies `MAX_SCORE_JSON_BYTES` (8 KiB) and `MAX_EVENTS_PER_REQUEST` (10,000) → 413;
CSV uploads `BATCH_MAX_BYTES` (32 MiB) → 413 as soon as the limit is passed, header lines over 16 KiB
or 256 columns and data lines over 64 KiB → 422, `BATCH_MAX_ROWS` (100,000) → 422. Rows are published
while the file is still being read, so a file rejected for size or row count mid-way leaves its task
`failed` with the reason, and the rows already published are still scored and stored under that task id.
"""
TAGS = [
    {"name": "events", "description": "Feature events onto the event stream."},
    {"name": "batch", "description": "CSV batch uploads and their results."},
    {"name": "predictions", "description": "Stored predictions and in-process scoring."},
    {"name": "models", "description": "Model registry: versions, metrics, activation."},
    {"name": "auth", "description": "Tokens for users (OAuth2 password flow)."},
    {"name": "ops", "description": "Liveness, readiness and Prometheus metrics."},
]


class BodyTooLarge(StarletteHTTPException):
    """The request body passed its size limit while being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"request body exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Bounds request bodies: Content-Length is checked up front, and bytes are counted as they arrive.

    The CSV upload path gets its own (larger) limit; the route reads it as a stream, so the 413 comes
    as soon as the limit is passed, not after the whole body was received. The scoring and sign-in
    routes get a small one.
    """

    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int, small_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit
        self.small_limit = small_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Reject or count the body, then run the app."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = (self.upload_limit if path == BATCH_UPLOAD_PATH
                 else self.small_limit if path in SMALL_BODY_PATHS else self.json_limit)
        for name, value in scope["headers"]:
            if name == b"content-length":
                with contextlib.suppress(ValueError):
                    if int(value) > limit:
                        response = error_response(413, f"request body exceeds the limit of {limit} bytes")
                        await response(scope, receive, send)
                        return
                break
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)


def _registry_dir(settings: ApiSettings) -> Path | None:
    return Path(settings.model_registry) if settings.model_registry else None


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build every client of this process, publish them on app.state, and close them on shutdown."""
    from ingest_api.auth.state import build_security
    from models.engine import InferenceEngine

    settings: ApiSettings = app.state.settings
    async with contextlib.AsyncExitStack() as stack:
        db_engine = create_engine(settings)
        stack.push_async_callback(bounded(db_engine.dispose, "postgres pool"))
        redis = build_redis(settings)
        stack.push_async_callback(bounded(redis.aclose, "redis client"))
        redis_probe = build_redis(settings, timeout_s=health.READY_DEADLINE_S)
        stack.push_async_callback(bounded(redis_probe.aclose, "redis readiness client"))
        sessionmaker = create_sessionmaker(db_engine)
        # Before any connection: bad security settings stop start-up at once.
        security = build_security(settings, redis, sessionmaker, key_cache_ttl_s=settings.key_cache_ttl_s)
        stack.callback(security.close)
        app.state.security = security
        await ensure_topics(settings)
        idempotent = await resolve_idempotence(settings)
        producer = AIOKafkaProducer(**connection_options(settings),
                                    **producer_options(settings) | {"enable_idempotence": idempotent})
        await producer.start()
        stack.push_async_callback(bounded(producer.stop, "kafka producer"))
        engine = app.state.preloaded_engine or await asyncio.to_thread(InferenceEngine.load,
                                                                       _registry_dir(settings))
        metrics: ApiMetrics = app.state.metrics
        topic_guard = TopicGuard(settings, (topics.CUSTOMER_FEATURES, topics.BATCH_ROWS))
        sync_scorer: DirectScorer | DynamicBatcher
        if settings.dynamic_batching:
            sync_scorer = DynamicBatcher(
                engine.score,
                engine.reasons,
                settings.dynamic_batch_window_ms / 1000,
                settings.dynamic_batch_max,
                metrics.batch_size.observe,
            )
        else:
            sync_scorer = DirectScorer(engine.score, engine.reasons)
        background = BackgroundPublisher(producer, on_failure=metrics.sync_publish_failures.inc)
        # Registered after producer.stop, so it runs before it: in-flight predictions get their acks first.
        stack.push_async_callback(bounded(background.drain, "sync prediction acks"))
        stack.push_async_callback(bounded(sync_scorer.close, "sync scorer"))
        services = Services(
            settings=settings,
            db_engine=db_engine,
            sessionmaker=sessionmaker,
            redis=redis,
            redis_probe=redis_probe,
            producer=producer,
            engine=engine,
            sync_scorer=sync_scorer,
            background=background,
            metrics=metrics,
            topics=topic_guard,
        )
        watcher = asyncio.create_task(engine.watch(settings.model_refresh_seconds), name="model-watch")
        guard = asyncio.create_task(topic_guard.run_forever(), name="topic-guard")
        quality = asyncio.create_task(monitor_forever(services, metrics.registry), name="model-quality")
        stack.push_async_callback(cancel_tasks, [watcher, guard, quality])
        app.state.services = services
        # TensorFlow/Keras leave millions of long-lived objects; without freezing them every full
        # collection walks them all and stalls requests for hundreds of milliseconds (the p99).
        gc.collect()
        gc.freeze()
        log.info("api ready", extra={"model_version": engine.model_version})
        yield
        log.info("api stopping")


def create_app(settings: ApiSettings | None = None, *, engine: InferenceEngine | None = None) -> FastAPI:
    """A configured API app; its lifespan connects to the broker, Postgres and Redis and loads the model.

    Pass `engine` to share an already loaded InferenceEngine (tests, in-process pipelines).
    """
    from ingest_api.auth.middleware import AuthMiddleware

    settings = settings or ApiSettings()
    app = FastAPI(
        title="StreamScore API",
        version="1.0.0",
        summary="Streaming next-product and propensity scoring for insurance customers.",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # served offline by ingest_api.console.docs
        redoc_url=None,
        # Metrics are Prometheus (ingest_api.metrics); FastAPI's OpenTelemetry hooks would cost per request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.preloaded_engine = engine
    app.state.metrics = ApiMetrics(cache_s=settings.metrics_cache_s)
    install_error_handlers(app)
    # Innermost: the hot scoring route skips routing and dependency solving (ingest_api.fast_path).
    app.add_middleware(FastPathMiddleware, fastapi_app=app)
    # Around it, inside the body limit, CORS and metrics: every request is authenticated from its
    # headers, once, before any body byte is read (ingest_api.auth.middleware).
    app.add_middleware(AuthMiddleware, fastapi_app=app, exempt=frozenset({auth.TOKEN_PATH}),
                       background=frozenset({health.READY_PATH}))
    app.add_middleware(
        BodyLimitMiddleware, json_limit=settings.max_json_bytes, upload_limit=settings.batch_max_bytes,
        small_limit=settings.max_score_json_bytes,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],  # DELETE: /api/v1/models/shadow
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Accept"],
        )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    if (tracer := tracing.setup("api")) is not None:  # outermost; absent unless OTEL_* asks for traces
        app.add_middleware(TracingMiddleware, tracer=tracer)
    for router in (auth.router, events.router, batch.router, predictions.router, scoring.router,
                   registry.router, health.router, shadow.router, drift.router, replays.router):
        app.include_router(router)
    app.include_router(outcomes.router)  # POST /api/v1/outcomes
    app.include_router(performance.router)  # GET /api/v1/models/performance
    app.include_router(dashboard.router)  # /dashboard page, /api/v1/dashboard/stats
    app.include_router(dead_letters.router)  # /api/v1/dead-letters: list, show, redrive (admin)
    app.include_router(docs.router)  # /docs, /redoc, /asyncapi (JSON or page), without a CDN
    return app


def prepare_process() -> ApiSettings:
    """Settings and JSON logging of an API process; call before the model (XGBoost) loads."""
    # Before XGBoost loads: the API scores 1-64 rows per call, where OpenMP's second thread only adds
    # hand-off latency; on shared cores it measured p50 6-10 ms vs 1.3 ms per call (bench/bench_sync.py).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = ApiSettings()
    configure_logging("INFO", service="api")
    preflight(settings)  # exits with one line when a broker refuses a Kafka setting
    return settings


def server_options(settings: ApiSettings) -> dict[str, Any]:
    """uvicorn options of every API process: uvloop, httptools with the head, waits and connections
    bounded (the open-file limit raised to fit), proxy headers only from configured proxies, no access log.
    """
    from ingest_api.server import bounded_protocol, connection_bound

    protocol = bounded_protocol(
        settings.max_header_bytes, head_timeout_s=settings.head_timeout_s,
        body_timeout_s=settings.body_timeout_s, body_min_bytes_per_s=settings.body_min_bytes_per_s,
        max_connections=connection_bound(settings.max_connections),
    )
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default: behind a same-host TCP proxy every
    # client could pick its own address and escape the per-address budgets.
    # ws "none": the API has no WebSocket route, so an upgrade is never handed to another protocol.
    return {"loop": "uvloop", "http": protocol, "ws": "none", "access_log": False, "log_config": None,
            "proxy_headers": bool(settings.forwarded_allow_ips),
            "forwarded_allow_ips": list(settings.forwarded_allow_ips) or None}


def run(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API with uvicorn: one worker, uvloop and httptools (head bounded), no access log."""
    import uvicorn

    settings = prepare_process()
    uvicorn.run(create_app(settings), host=host, port=port, workers=1, **server_options(settings))

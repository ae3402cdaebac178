"""The sink FastStream app: predictions.v1 and dead-letter.v1 into Postgres, predictions also into Redis.

In-process use (tests, other services' end-to-end tests):

    app = build_app(SinkSettings(...))
    await app.start()   # topics ensured, Postgres/Redis clients built, consumers joined
    ...
    await app.stop()
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from faststream import FastStream
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.consumer import ConsumerSpec, Publish, build_consumer_app, serve_consumer
from infra.consumer import runtime_of as consumer_runtime
from infra.database import create_engine, create_sessionmaker
from infra.pipeline import Finish
from infra.redis_client import redis_client
from schemas import topics
from sink import metrics
from sink.handlers import SinkRuntime, repair_cache_forever, store_batch
from sink.settings import SinkSettings

SPEC = ConsumerSpec(
    service="sink",
    contract=topics.SINK,
    set_lag=metrics.set_lag,
)


def build_app(settings: SinkSettings | None = None) -> FastStream:
    """A sink app; `await app.start()` / `await app.stop()` run it in-process, `app.run()` until signalled."""
    settings = settings or SinkSettings()
    runtime = SinkRuntime(settings=settings)
    db_engine: AsyncEngine | None = None

    async def handle(records: Sequence[Any], publish: Publish) -> Finish:
        return await store_batch(runtime, publish, records)

    async def start() -> None:
        nonlocal db_engine
        db_engine = create_engine(settings)
        runtime.sessionmaker = create_sessionmaker(db_engine)
        runtime.redis = redis_client(
            settings.redis_url,
            socket_connect_timeout=settings.redis_timeout_seconds,
            socket_timeout=settings.redis_timeout_seconds,
        )
        runtime.tasks.append(asyncio.create_task(repair_cache_forever(runtime)))

    async def stop() -> None:
        if runtime.redis is not None:
            await runtime.redis.aclose()
            runtime.redis = None
        if db_engine is not None:
            await db_engine.dispose()
        runtime.sessionmaker = None

    return build_consumer_app(
        settings, SPEC, runtime, handle, on_start=start, on_stop=stop, stats_redis_url=settings.redis_url
    )


def runtime_of(app: FastStream) -> SinkRuntime:
    """The runtime (settings, clients, counters) of an app made by build_app."""
    return consumer_runtime(app, SinkRuntime)


def run() -> None:
    """Run one sink process until SIGINT/SIGTERM (`streamscore sink`)."""
    settings = SinkSettings()
    serve_consumer(build_app(settings), "sink", settings)

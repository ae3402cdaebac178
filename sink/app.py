"""The sink FastStream app: predictions.v1 and dead-letter.v1 into Postgres, predictions also into Redis.

In-process use (tests, other services' end-to-end tests):

    app = build_app(SinkSettings(...))
    await app.start()   # topics ensured, Postgres/Redis clients built, consumers joined
    ...
    await app.stop()
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from redis.asyncio import Redis

from schemas import topics
from sink import metrics
from sink.handlers import SinkRuntime, store_batch
from sink.settings import SinkSettings
from streamscore.database import create_engine, create_sessionmaker
from streamscore.kafka import ensure_topics, producer_options, topic_name
from streamscore.process import cancel_tasks, serve
from streamscore.stats import publish_stats_forever, track_lag_forever

log = logging.getLogger(__name__)
RUNTIME_KEY = "sink_runtime"


def raw_values(message: StreamMessage[Any]) -> Any:
    """Skip FastStream's per-record JSON decode: the handlers validate the raw bytes themselves."""
    return message.body


def build_app(settings: SinkSettings | None = None) -> FastStream:
    """A sink app; `await app.start()` / `await app.stop()` run it in-process, `app.run()` until signalled."""
    settings = settings or SinkSettings()
    broker = KafkaBroker(
        settings.kafka_bootstrap,
        **producer_options(settings),
        logger=logging.getLogger(f"{__name__}.broker"),  # through the JSON root handler
        log_level=logging.DEBUG,  # per-batch "Received/Processed" lines would drown the logs
    )
    runtime = SinkRuntime(settings=settings)
    # One subscriber (one consumer group, one transaction per poll) for both topics: on Tansu every
    # group join costs ~5 s and subscribers start one after another.
    subscriber = broker.subscriber(
        topic_name(settings, topics.PREDICTIONS),
        topic_name(settings, topics.DEAD_LETTER),
        batch=True,
        group_id=settings.topic_prefix + topics.SINK_GROUP,
        auto_offset_reset="earliest",
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,  # commit only after Postgres committed; rewind on error
        decoder=raw_values,
    )

    @subscriber
    async def store_records(values: list[bytes], message: KafkaMessage) -> None:
        """Store a batch of predictions and dead letters; returning lets its offsets commit."""
        await store_batch(runtime, broker.publish, message.raw_message)

    db_engine = None

    async def start_runtime() -> None:
        nonlocal db_engine
        await ensure_topics(settings)
        db_engine = create_engine(settings)
        runtime.sessionmaker = create_sessionmaker(db_engine)
        runtime.redis = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.redis_timeout_seconds,
            socket_timeout=settings.redis_timeout_seconds,
        )
        runtime.tasks.append(
            asyncio.create_task(
                track_lag_forever(lambda: [subscriber.consumer], runtime.stats, metrics.set_lag)
            )
        )
        key = f"stats:sink:{settings.instance_id}"
        runtime.tasks.append(
            asyncio.create_task(
                publish_stats_forever(settings.redis_url, key, runtime.stats, settings.stats_interval_seconds)
            )
        )
        gc.freeze()  # start-up objects live forever; keep them out of every collection
        log.info("sink starting", extra={"instance_id": settings.instance_id})

    async def stop_runtime() -> None:
        await cancel_tasks(runtime.tasks)
        if runtime.redis is not None:
            await runtime.redis.aclose()
            runtime.redis = None
        if db_engine is not None:
            await db_engine.dispose()
        runtime.sessionmaker = None

    app = FastStream(broker, logger=log, on_startup=[start_runtime], after_shutdown=[stop_runtime])
    app.context.set_global(RUNTIME_KEY, runtime)
    return app


def runtime_of(app: FastStream) -> SinkRuntime:
    """The runtime (settings, clients, counters) of an app made by build_app."""
    runtime: SinkRuntime = app.context.get(RUNTIME_KEY)
    return runtime


def run() -> None:
    """Run one sink process until SIGINT/SIGTERM (`streamscore sink`)."""
    settings = SinkSettings()
    serve(
        build_app(settings), service="sink", log_level=settings.log_level, metrics_port=settings.metrics_port
    )

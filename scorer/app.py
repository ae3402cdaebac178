"""The scorer FastStream app: one batch subscriber on both feature topics, publishing to predictions.v1.

In-process use (tests, other services' end-to-end tests):

    app = build_app(ScorerSettings(...), engine=preloaded_engine)  # engine optional
    await app.start()   # topics ensured, engine loaded, consumer joined
    ...
    await app.stop()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from faststream import FastStream

from infra.consumer import (
    ConsumerSpec,
    Publish,
    broker_of,
    build_consumer_app,
    has_cluster,
    serve_consumer,
)
from infra.consumer import runtime_of as consumer_runtime
from infra.kafka import producer_options
from infra.kafka_connection import connection_options
from infra.pipeline import Finish
from infra.transactions import PartitionTransactions, TransactionObserver
from schemas import topics
from scorer import drift, metrics, shadow
from scorer.handlers import BrokerSender, ProducerSender, score_batch
from scorer.runtime import KeyedSender, ScorerRuntime, inference_executor
from scorer.settings import ScorerSettings

if TYPE_CHECKING:
    from models.engine import InferenceEngine

log = logging.getLogger(__name__)
SPEC = ConsumerSpec(
    service="scorer",
    contract=topics.SCORER,
    set_lag=metrics.set_lag,
)


def build_app(settings: ScorerSettings | None = None, *, engine: InferenceEngine | None = None) -> FastStream:
    """A scorer app; `await app.start()` / `await app.stop()` run it in-process, `app.run()` until signalled.

    Pass `engine` to share an already loaded InferenceEngine (tests); otherwise it is loaded at start-up.
    """
    settings = settings or ScorerSettings()
    runtime = ScorerRuntime(settings=settings, engine=engine)
    shadow.attach(runtime)
    drift.attach(runtime)
    producer: AIOKafkaProducer | None = None
    transactions = exactly_once(settings, runtime)

    async def handle(records: Sequence[Any], publish: Publish) -> Finish:
        if transactions is not None:  # only owned partitions, each record once
            records = transactions.accept(records)
        return await score_batch(runtime, records)

    async def start() -> None:
        nonlocal producer
        runtime.executor = inference_executor()
        broker = broker_of(app)  # exactly-once output goes to its input partition's transaction instead
        if transactions is None and has_cluster(broker):
            producer = AIOKafkaProducer(**connection_options(settings), **producer_options(settings))
            await producer.start()
            runtime.sender = ProducerSender(producer)
        elif transactions is None:  # an in-memory broker (FastStream's TestKafkaBroker) delivers in-line
            runtime.sender = BrokerSender(broker.publish)
        if runtime.engine is None:
            from models.engine import InferenceEngine

            registry = Path(settings.model_registry) if settings.model_registry else None
            runtime.engine = await asyncio.to_thread(
                lambda: InferenceEngine.load(registry, follow_shadow=settings.shadow_scoring)
            )
        log.info("scorer model loaded", extra={"model_version": runtime.engine.model_version})
        runtime.tasks.append(asyncio.create_task(runtime.engine.watch(settings.model_refresh_seconds)))

    async def stop() -> None:
        nonlocal producer
        runtime.sender = None
        if producer is not None:
            await producer.stop()  # flushes whatever is still in flight
            producer = None
        if runtime.executor is not None:
            runtime.executor.shutdown(wait=True)
            runtime.executor = None

    app = build_consumer_app(
        settings, SPEC, runtime, handle, on_start=start, on_stop=stop, stats_redis_url=settings.redis_url,
        transactions=transactions,
    )
    return app


def exactly_once(settings: ScorerSettings, runtime: ScorerRuntime) -> PartitionTransactions | None:
    """In exactly-once mode, the per-partition transactions and the route of each batch's output into them."""
    runtime.stats.providers.append(lambda: {"processing_guarantee": settings.processing_guarantee})
    if settings.processing_guarantee != "exactly-once":
        return None
    transactions = PartitionTransactions(
        settings, settings.topic_prefix + SPEC.contract.group, settings.checkpoint_interval_ms / 1000.0,
        settings.settle_timeout_seconds,
        TransactionObserver(metrics.transaction_committed, metrics.transaction_aborted),
    )

    async def route(topic: str, partition: int) -> KeyedSender:
        return ProducerSender(await transactions.producer_for(topic, partition))

    runtime.route = route
    return transactions


def runtime_of(app: FastStream) -> ScorerRuntime:
    """The runtime (settings, engine, counters) of an app made by build_app."""
    return consumer_runtime(app, ScorerRuntime)


def run() -> None:
    """Run one scorer process until SIGINT/SIGTERM (`streamscore scorer`)."""
    settings = ScorerSettings()
    serve_consumer(build_app(settings), "scorer", settings)

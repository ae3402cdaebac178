"""The batch-consumer runtime shared by the scorer and the sink: broker, subscriber, background tasks, serve.

Each service supplies its topics, its group, its per-batch handler and its own start/stop hooks; this module
owns what both need identically: a raw-bytes batch subscriber with an explicit ack policy, topic creation,
lag tracking, the dashboard stats hash, the collector policy after start-up and an orderly shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.producer import AioKafkaFastProducerImpl
from faststream.message import StreamMessage

from infra.batch_trace import CURRENT_BATCH, BatchTrace
from infra.kafka import TopicGuard, ensure_topics, producer_options, resolve_idempotence, topic_name
from infra.kafka_connection import connection_options, faststream_security, parse_bootstrap
from infra.kafka_diagnosis import preflight
from infra.logging import configure_logging
from infra.pipeline import BatchPipeline, Finish
from infra.process import cancel_tasks, serve
from infra.settings import ConsumerSettings
from infra.stats import PipelineStats, publish_stats_forever, track_lag_forever
from infra.tracing import setup as setup_tracing
from infra.transactions import PartitionTransactions
from schemas.topics import ConsumerContract

log = logging.getLogger(__name__)
RUNTIME_KEY = "consumer_runtime"
R = TypeVar("R", bound="ConsumerRuntime")
GC_YOUNG_THRESHOLD = 50_000
"""Allocations between young-generation collections in a consumer process (CPython's default: 700)."""

Publish = Callable[..., Awaitable[Any]]
"""`KafkaBroker.publish`-compatible: (body, topic, *, key, no_confirm) -> future or metadata."""
Hook = Callable[[], Awaitable[None]]
Handler = Callable[[Sequence[Any], Publish], Awaitable[Finish | None]]
"""Handles a batch in record order; returns what may finish in the background (before its commit)."""
SetLag = Callable[[Any, int], None]
ParseBatch = Callable[[tuple[Any, ...]], Awaitable[StreamMessage[Any]]]


@dataclass(kw_only=True)
class ConsumerRuntime:
    """Per-process state every batch consumer has: counters and background tasks."""

    stats: PipelineStats = field(default_factory=PipelineStats)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ConsumerSpec:
    """What distinguishes one batch consumer service from another."""

    service: str
    contract: ConsumerContract
    set_lag: SetLag


async def raw_records(message: StreamMessage[Any]) -> Any:
    """The polled records as aiokafka gave them: the handlers validate the raw bytes themselves.

    A coroutine, because FastStream runs a plain function decoder in a worker thread: a thread hand-off
    per polled batch.
    """
    return message.raw_message


async def parse_records(records: tuple[Any, ...], parse_batch: ParseBatch) -> StreamMessage[Any]:
    """FastStream's batch message without its per-record work, which nothing here reads.

    Its parser copies every record's value into a list and decodes every record's headers into a dict
    (0.17 µs a record, 0.32 with a traceparent: docs/operations.md, "What tracing costs"); parsing the first
    record alone still gives the message its ids, topic path and consumer, and the records stay raw.
    """
    message = await parse_batch(records[:1])
    message.raw_message = records
    return message


def build_broker(settings: ConsumerSettings, service: str) -> KafkaBroker:
    """A broker whose producer waits for all replicas (acks=all) and batches sends."""
    return KafkaBroker(
        parse_bootstrap(settings.kafka_bootstrap),  # a list: one string is taken as one host name
        security=faststream_security(settings),
        **producer_options(settings),
        logger=logging.getLogger(f"{service}.broker"),  # through the JSON root handler
        log_level=logging.DEBUG,  # per-batch "Received/Processed" lines would drown the logs
    )


def build_consumer_app(
    settings: ConsumerSettings,
    spec: ConsumerSpec,
    runtime: ConsumerRuntime,
    handle: Handler,
    *,
    on_start: Hook,
    on_stop: Hook,
    stats_redis_url: str | None,
    transactions: PartitionTransactions | None = None,
) -> FastStream:
    """A FastStream app with one batch subscriber (one group, one poll per batch) for all of spec.topics.

    With `transactions` (exactly-once), offsets commit in its transactions instead of by the consumer.
    """
    broker = build_broker(settings, spec.service)
    pipeline = BatchPipeline(settings.pipeline_depth, lambda: subscriber.consumer,
                             settings.settle_timeout_seconds)
    # One subscriber for every topic: on Tansu every group join costs ~5 s and subscribers start in turn.
    subscriber = broker.subscriber(
        *(topic_name(settings, base) for base in spec.contract.topics),
        batch=True,
        group_id=settings.topic_prefix + spec.contract.group,
        auto_offset_reset="earliest",
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_partition_fetch_bytes=settings.fetch_partition_max_bytes,
        # The pipeline commits each batch's own offsets once it settled, and rewinds on error.
        ack_policy=AckPolicy.MANUAL,
        listener=pipeline.listener(),
        parser=parse_records,
        decoder=raw_records,
        # Only committed output of a transactional producer (and everything of a plain one).
        isolation_level="read_committed",
    )
    if transactions is not None:
        transactions.bind(pipeline, lambda: subscriber.consumer)
    tracer = setup_tracing(spec.service)  # None unless OTEL_* asks for traces (infra/tracing.py)

    @subscriber
    async def consume_batch(records: Any) -> None:
        """Handle one polled batch (its aiokafka records, in fetch order); its offsets commit once what it
        returned has finished."""
        if tracer is None:
            await pipeline.handle(records, lambda: handle(records, broker.publish))
            return
        batch = BatchTrace(tracer, spec.service, records)
        token = CURRENT_BATCH.set(batch)  # the handler's own spans and output headers hang off it
        try:
            with batch.stage("handle"):
                await pipeline.handle(records, lambda: handle(records, broker.publish), batch)
        finally:
            CURRENT_BATCH.reset(token)

    async def start() -> None:
        # Under FastStream's TestKafkaBroker the producer is in memory: no cluster to prepare, guard, measure.
        cluster = has_cluster(broker)
        if cluster:
            await prepare_cluster(settings, broker, transactions)
        await on_start()
        if cluster:
            # A memory-only broker loses its topics on restart: recreate them instead of failing every
            # commit, and read the new topics from the start (positions and any offsets committed into them
            # since the restart refer to the lost incarnation, and would skip its first records).
            guard = TopicGuard(
                settings,
                on_restart=lambda: rewind(pipeline, subscriber.consumer, settings.settle_timeout_seconds),
            )
            runtime.tasks.append(asyncio.create_task(guard.run_forever()))
            if transactions is not None:
                runtime.tasks.append(asyncio.create_task(transactions.checkpoint_forever()))
            runtime.tasks.append(asyncio.create_task(track_lag_forever(
                lambda: [subscriber.consumer], runtime.stats, spec.set_lag, connection_options(settings)
            )))
        # Start-up objects (TensorFlow's above all) live forever: keep them out of every collection.
        gc.freeze()
        # A batch keeps thousands of young objects alive at once (records, decoded structs, rows). At 700
        # allocations per collection they are traversed and promoted many times per batch (gc.callbacks
        # timing over 300k events: 1.5 s in the scorer, 1.9 s in the sink). Few of them form cycles, so
        # collecting less often keeps no memory for long.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        runtime.stats.providers.append(lambda: {"in_flight": str(pipeline.in_flight)})
        if stats_redis_url:
            key = f"stats:{spec.service}:{settings.instance_id}"
            interval = settings.stats_interval_seconds
            runtime.tasks.append(
                asyncio.create_task(publish_stats_forever(stats_redis_url, key, runtime.stats, interval))
            )
        log.info(f"{spec.service} starting", extra={"instance_id": settings.instance_id})

    async def stop() -> None:
        await cancel_tasks(runtime.tasks)
        await on_stop()

    app = FastStream(
        broker, logger=log, on_startup=[start], on_shutdown=[pipeline.close], after_shutdown=[stop]
    )
    app.context.set_global(RUNTIME_KEY, runtime)
    return app


def has_cluster(broker: KafkaBroker) -> bool:
    """Whether the broker publishes to a Kafka cluster (FastStream's TestKafkaBroker publishes in memory)."""
    return isinstance(broker.config.producer, AioKafkaFastProducerImpl)


async def prepare_cluster(
    settings: ConsumerSettings, broker: KafkaBroker, transactions: PartitionTransactions | None
) -> None:
    """Before any producer starts: check transactions, create the topics, settle idempotence once."""
    if transactions is not None:
        await transactions.probe()  # refuses a broker without transactions, before anything else
    await ensure_topics(settings)
    if settings.kafka_idempotent and not await resolve_idempotence(settings):
        # Once per process, before any producer starts: on_start's (via producer_options) and the
        # broker's, which FastStream builds from kwargs it offers no public way to change.
        settings.kafka_idempotent = False
        broker._connection_kwargs["enable_idempotence"] = False


async def rewind(pipeline: BatchPipeline, consumer: Any, timeout_s: float) -> None:
    """Seek every assigned partition to its beginning, and commit that (after the broker restarted empty)."""
    await pipeline.reset()  # their offsets belong to the lost incarnation
    if consumer is None or not consumer.assignment():
        return
    assigned = set(consumer.assignment())
    await consumer.seek_to_beginning(*assigned)
    # A commit sent before the kill may have been retried into the new incarnation's group. The next
    # rebalance would resume from it and skip the new topic's first records, so overwrite it now.
    try:
        beginnings = await asyncio.wait_for(consumer.beginning_offsets(list(assigned)), timeout_s)
        await asyncio.wait_for(consumer.commit(beginnings), timeout_s)
    except Exception as error:  # the seek stands; the next batch's commit overwrites the stale offsets too
        log.warning("could not commit the rewound offsets", extra={"error": repr(error)[:300]})


def runtime_of(app: FastStream, kind: type[R]) -> R:
    """The runtime of an app made by build_consumer_app, checked to be of the expected kind."""
    runtime = app.context.get(RUNTIME_KEY)
    if not isinstance(runtime, kind):
        raise TypeError(f"app runtime is {type(runtime).__name__}, not {kind.__name__}")
    return runtime


def broker_of(app: FastStream) -> KafkaBroker:
    """The Kafka broker of an app made by build_consumer_app."""
    if not isinstance(app.broker, KafkaBroker):
        raise TypeError("app has no Kafka broker")
    return app.broker


def serve_consumer(app: FastStream, service: str, settings: ConsumerSettings) -> None:
    """Run one consumer process until SIGINT/SIGTERM, once Kafka accepts its settings (exits if refused)."""
    configure_logging(settings.log_level, service=service)
    preflight(settings)
    serve(app, service=service, log_level=settings.log_level, metrics_port=settings.metrics_port)

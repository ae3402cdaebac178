"""Exactly-once output: one transactional producer per input partition, offsets committed with the output.

aiokafka has no KIP-447 (group-metadata fencing), so a zombie (a consumer that lost its partitions without
knowing) is fenced only by a transactional id that is stable per input partition: the new owner's
InitProducerId bumps the epoch, which aborts the zombie's open transaction and fails whatever it sends next.
So each owned input partition has its own producer, started when the partition is assigned (before its
committed offset is read: after the fence it is stable) and closed when it is revoked. A batch's output for
a partition goes into that partition's open transaction; a checkpoint (every `interval_s`, with the pipeline
paused so that no batch is half in) adds each partition's settled offsets and commits. Any failure aborts and
rewinds the partition to the offset its transaction began from, so the batch is scored again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, ProducerFenced

from infra.kafka import producer_options
from infra.pipeline import BatchPipeline
from infra.process import StartupRefused
from infra.rounds import sleep_or_stop
from infra.settings import KafkaSettings

log = logging.getLogger(__name__)

GUARANTEE_SETTING = "STREAMSCORE_PROCESSING_GUARANTEE"


class TransactionsUnsupported(StartupRefused):
    """The broker cannot run transactions (InitProducerId with a transactional id failed)."""


@dataclass(frozen=True)
class TransactionObserver:
    """Where commits (with their seconds) and aborts are counted (the service's metrics)."""

    committed: Callable[[float], None]
    aborted: Callable[[], None]


@dataclass(slots=True)
class Owned:
    """An owned input partition: its producer and where its transaction stands."""

    producer: AIOKafkaProducer
    committed: int  # the group's committed offset: where an abort rewinds to
    next: int  # the next offset to accept (a record fetched again after a seek is dropped)
    pending: int | None = None  # offset after the settled batches whose output is in the open transaction
    open: bool = False
    began: float = 0.0
    gap_checked: int | None = None  # `next` when a gap made it read from there again (a gap then is real)


def transactional_id(group_id: str, tp: TopicPartition) -> str:
    """Stable per input partition (the group id carries the topic prefix)."""
    return f"{group_id}.{tp.topic}.{tp.partition}"


async def probe_transactions(settings: KafkaSettings, group_id: str) -> None:
    """Raise TransactionsUnsupported unless the broker grants a transactional producer id."""
    probe = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, transactional_id=f"{group_id}.probe",
                             request_timeout_ms=10_000)
    sender_log = logging.getLogger("aiokafka.producer.sender")
    level = sender_log.level
    sender_log.setLevel(logging.CRITICAL)  # its own ERROR line would repeat the one that explains
    try:
        await asyncio.wait_for(probe.start(), 30)
    except KafkaConnectionError:
        raise
    except (KafkaError, TimeoutError) as error:
        raise TransactionsUnsupported(
            f"{GUARANTEE_SETTING}=exactly-once needs a broker with transactions, and the broker at "
            f"{settings.kafka_bootstrap} refused a transactional producer id (InitProducerId: "
            f"{type(error).__name__}); use Apache Kafka, or {GUARANTEE_SETTING}=at-least-once"
        ) from None
    finally:
        sender_log.setLevel(level)
        await probe.stop()


class PartitionTransactions:
    """The pipeline's exactly-once offsets (infra.pipeline.Transactional) and the scorer's output routes."""

    def __init__(self, settings: KafkaSettings, group_id: str, interval_s: float, timeout_s: float,
                 observer: TransactionObserver | None = None) -> None:
        self._settings = settings
        self._group_id = group_id
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._observer = observer
        self._owned: dict[TopicPartition, Owned] = {}
        self._pipeline: BatchPipeline | None = None
        self._consumer: Callable[[], Any] = lambda: None
        self._closed = False

    def bind(self, pipeline: BatchPipeline, consumer: Callable[[], Any]) -> None:
        """Serve this pipeline, whose aiokafka consumer `consumer()` returns once it started."""
        self._pipeline, self._consumer = pipeline, consumer
        pipeline.transactions = self

    async def probe(self) -> None:
        """Refuse to run on a broker without transactions (TransactionsUnsupported)."""
        await probe_transactions(self._settings, self._group_id)

    def owned(self) -> list[TopicPartition]:
        """The input partitions this process produces for now."""
        return sorted(self._owned)

    def accept(self, records: Sequence[Any]) -> list[Any]:
        """The records of owned partitions that follow the last one handled, in order.

        A record before it was fetched again after a seek: dropped. One after a gap was fetched from a
        position older than the last seek (a batch polled meanwhile): dropped, and the partition is read from
        the next offset again; a gap still there then is real (retention, control records) and accepted.
        """
        kept = []
        owned = self._owned
        gaps: list[tuple[TopicPartition, Owned]] = []
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            state = owned.get(tp)
            if state is None or record.offset < state.next:
                continue
            if record.offset > state.next and state.gap_checked != state.next:
                if not gaps or gaps[-1][0] != tp:
                    gaps.append((tp, state))
                continue
            state.next = record.offset + 1
            kept.append(record)
        consumer = self._consumer()
        for tp, state in gaps:
            state.gap_checked = state.next
            if consumer is not None and tp in consumer.assignment():
                consumer.seek(tp, state.next)
        return kept

    async def producer_for(self, topic: str, partition: int) -> AIOKafkaProducer:
        """The producer of this input partition, in a transaction (begun now if none is open)."""
        state = self._owned.get(TopicPartition(topic, partition))
        if state is None:
            raise ProducerFenced(f"input partition {topic}[{partition}] is no longer owned")
        if not state.open:
            await state.producer.begin_transaction()
            state.open, state.began = True, time.perf_counter()
        return state.producer

    async def record(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets of a settled batch: they commit with the transaction that holds its output.

        Capped at the next offset to accept: records dropped (fetched before a seek, after a gap) were never
        scored, and are read again.
        """
        for tp, offset in offsets.items():
            state = self._owned.get(tp)
            if state is not None:
                floor = state.pending if state.pending is not None else state.committed
                state.pending = max(min(offset, state.next), floor)

    def _dirty(self) -> bool:
        return any(s.open or (s.pending or 0) > s.committed for s in self._owned.values())

    async def checkpoint_forever(self) -> None:
        """Every interval, with the pipeline paused, commit what settled; a failure rewinds the pipeline."""
        assert self._pipeline is not None
        while not self._closed:
            await sleep_or_stop(self._interval_s)
            if not self._dirty():
                continue
            async with self._pipeline.paused() as settled:
                if settled and not self._closed:
                    try:
                        await self.checkpoint()
                    except Exception as error:
                        self._pipeline.fail(error)

    async def checkpoint(self) -> None:
        """Commit each partition's transaction with its settled offsets; raise the first failure."""
        work = [(tp, s) for tp, s in self._owned.items()
                if s.open or (s.pending is not None and s.pending > s.committed)]
        results = await asyncio.gather(*(self._commit(tp, s) for tp, s in work), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _commit(self, tp: TopicPartition, state: Owned) -> None:
        producer = state.producer
        started = time.perf_counter()
        if not state.open:
            await producer.begin_transaction()
            state.open, state.began = True, started
        try:
            if state.pending is not None and state.pending > state.committed:
                offsets = {tp: state.pending}
                await asyncio.wait_for(producer.send_offsets_to_transaction(offsets, self._group_id),
                                       self._timeout_s)
            await asyncio.wait_for(producer.commit_transaction(), self._timeout_s)
        except BaseException as error:
            log.warning("transaction did not commit; aborting it",
                        extra={"partition": f"{tp.topic}[{tp.partition}]", "error": repr(error)[:300]})
            raise
        state.open = False
        if state.pending is not None:
            state.committed = max(state.committed, state.pending)
        state.pending = None
        if self._observer is not None:
            self._observer.committed(time.perf_counter() - state.began)

    async def abort(self) -> dict[TopicPartition, int]:
        """Abort every open transaction; each owned partition's committed offset (read from there again)."""
        for tp in list(self._owned):
            await self._abort(tp)
        starts: dict[TopicPartition, int] = {}
        for tp, state in self._owned.items():
            state.pending, state.next, state.gap_checked = None, state.committed, None
            starts[tp] = state.committed
        return starts

    async def _abort(self, tp: TopicPartition) -> None:
        state = self._owned[tp]
        if not state.open:
            return
        state.open = False
        try:
            await asyncio.wait_for(state.producer.abort_transaction(), self._timeout_s)
        except Exception as error:
            # Fenced (a newer owner took the partition; the producer is then in a fatal state) or broken.
            # Never start its producer again from here: that would fence the rightful owner. The group
            # decides: after the rejoin, an assignment starts a producer and reads the committed offset.
            log.error("could not abort (fenced: another scorer owns the partition); rejoining the group",
                      extra={"partition": f"{tp.topic}[{tp.partition}]", "error": repr(error)[:300]})
            await self._let_go(tp)
            self._rejoin()
            return
        if self._observer is not None:
            self._observer.aborted()

    def _rejoin(self) -> None:
        coordinator = getattr(self._consumer(), "_coordinator", None)
        if coordinator is not None:
            coordinator.request_rejoin()

    async def revoked(self, partitions: set[TopicPartition], settled: bool) -> None:
        """Commit what settled (else abort), then close the producers of the revoked partitions."""
        if settled and not self._closed:
            try:
                await self.checkpoint()
            except Exception as error:
                log.warning("could not commit before the rebalance; aborting",
                            extra={"error": repr(error)[:300]})
        for tp in partitions & set(self._owned):
            await self._abort(tp)
            await self._let_go(tp)

    async def _let_go(self, tp: TopicPartition) -> None:
        state = self._owned.pop(tp, None)
        if state is not None:
            try:
                await asyncio.wait_for(state.producer.stop(), self._timeout_s)
            except Exception as error:
                log.warning("producer did not stop cleanly", extra={"error": repr(error)[:300]})

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        """A producer per new partition (fencing any previous owner), then seek to its committed offset."""
        if self._closed:
            return
        new = sorted(partitions - set(self._owned))
        consumer = self._consumer()
        if consumer is not None and new:
            # Nothing is fetched from where the consumer would start until the fence and the seek are done.
            consumer.pause(*new)
        started = await asyncio.gather(*(self._start(tp) for tp in new), return_exceptions=True)
        for tp, producer in zip(new, started, strict=True):
            if isinstance(producer, BaseException):
                log.error("no transactional producer for the partition; its records wait for a rebalance",
                          extra={"partition": f"{tp.topic}[{tp.partition}]", "error": repr(producer)[:300]})
                self._rejoin()
                continue
            # Read after the fence: the previous owner's last transaction has ended, so its offsets are in.
            offset = await consumer.committed(tp) if consumer is not None else None
            if offset is None and consumer is not None:
                offset = (await consumer.beginning_offsets([tp]))[tp]
            offset = offset or 0
            if consumer is not None and tp in consumer.assignment():
                consumer.seek(tp, offset)
                consumer.resume(tp)
            self._owned[tp] = Owned(producer, committed=offset, next=offset)

    async def _start(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(bootstrap_servers=self._settings.kafka_bootstrap,
                                    **producer_options(self._settings),
                                    transactional_id=transactional_id(self._group_id, tp))
        try:
            await asyncio.wait_for(producer.start(), self._timeout_s)
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def close(self, settled: bool) -> None:
        """Commit what settled (else abort), and close every producer."""
        await self.revoked(set(self._owned), settled)
        self._closed = True

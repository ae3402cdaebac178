"""Batches handled in order, each finished in the background, and offsets committed only after their batch.

A consumed batch's handler does the work that must happen in record order (decode, inference, queueing its
output) and returns what is left (waiting for the broker's acks, a cache write). That rest runs on one
settling task, oldest first, and only when it has succeeded are the batch's own offsets (never the
consumer's position, which may already be past later batches) committed. Meanwhile the consumer polls and
handles the next batch, so acks and commits no longer idle the process between batches.

`depth` bounds the batches not yet settled (1: every batch settles before its handler returns). If a
batch fails to settle, no later batch commits; the next poll rewinds every partition to the first
uncommitted offset, so nothing is lost and what follows is replayed (at least once; the sink stores once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

log = logging.getLogger(__name__)

Finish = Callable[[], Awaitable[None]]
"""What is left of a batch once its handler returned; offsets commit after it succeeds."""


@dataclass(frozen=True, slots=True)
class Span:
    """Per partition the first offset of a batch and the offset after its last record."""

    first: dict[TopicPartition, int]
    after: dict[TopicPartition, int]

    @classmethod
    def of(cls, records: Sequence[Any]) -> Span:
        """The span of consumed records (aiokafka ConsumerRecords, in fetch order)."""
        first: dict[TopicPartition, int] = {}
        after: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first.setdefault(tp, record.offset)
            after[tp] = record.offset + 1
        return cls(first, after)


@dataclass(slots=True)
class Unsettled:
    """A batch whose finish and commit have not completed yet."""

    span: Span
    finish: Finish | None
    done: asyncio.Future[None]


class BatchPipeline:
    """Orders the settling of consumed batches and their offset commits (see the module docstring)."""

    def __init__(self, depth: int, consumer: Callable[[], Any]) -> None:
        self._consumer = consumer  # the subscriber's aiokafka consumer, known only once it started
        self._slots = asyncio.Semaphore(depth)
        self._unsettled: list[Unsettled] = []
        self._queue: asyncio.Queue[Unsettled] = asyncio.Queue()
        self._failure: BaseException | None = None
        self._settler: asyncio.Task[None] | None = None

    async def handle(self, records: Sequence[Any], work: Callable[[], Awaitable[Finish | None]]) -> None:
        """Run `work` on a polled batch now and settle what it returns in order; rewinds after a failure."""
        span = Span.of(records)
        await self._slots.acquire()
        if self._failure is not None:
            self._slots.release()
            await self._recover(span)  # this batch lies past the rewind point: it is fetched again
            return
        try:
            finish = await work()
        except BaseException:
            self._slots.release()
            await self.drain()
            await self._rewind([span])
            raise
        item = Unsettled(span, finish, asyncio.get_running_loop().create_future())
        self._unsettled.append(item)
        self._queue.put_nowait(item)
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_forever())

    async def drain(self) -> None:
        """Wait until every handled batch has settled (or failed)."""
        for item in list(self._unsettled):
            await asyncio.shield(item.done)

    async def close(self) -> None:
        """Let every handled batch settle, then stop the settling task (at shutdown)."""
        await self.drain()
        await self.reset()

    async def reset(self) -> None:
        """Forget every unsettled batch without committing it (their partitions are being rewound)."""
        if self._settler is not None:
            self._settler.cancel()
            await asyncio.gather(self._settler, return_exceptions=True)
            self._settler = None
        for item in self._unsettled:
            if not item.done.done():  # never reached by the settler: its slot is still taken
                item.done.set_result(None)
                self._slots.release()
        self._unsettled.clear()
        self._queue = asyncio.Queue()
        self._failure = None

    def listener(self) -> ConsumerRebalanceListener:
        """Settles every handled batch before partitions are given away, so their offsets commit first."""
        return _SettleOnRevoke(self)

    async def _settle_forever(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if self._failure is None:
                    if item.finish is not None:
                        await item.finish()
                    await self._commit(item.span.after)
                    self._unsettled.remove(item)
            except Exception as error:
                self._failure = error
                log.warning("batch did not settle; rewinding to its first offsets",
                            extra={"error": repr(error)[:300]})
            finally:
                self._slots.release()
                item.done.set_result(None)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self._consumer()
        if consumer is not None and offsets:
            await consumer.commit(offsets)

    async def _recover(self, current: Span) -> None:
        await self.drain()
        await self._rewind([*(item.span for item in self._unsettled), current])
        await self.reset()

    async def _rewind(self, spans: Sequence[Span]) -> None:
        """Seek each partition to the first offset any of the spans holds for it."""
        consumer = self._consumer()
        if consumer is None:
            return
        assigned = consumer.assignment()
        first: dict[TopicPartition, int] = {}
        for span in spans:
            for tp, offset in span.first.items():
                first[tp] = min(offset, first.get(tp, offset))
        for tp, offset in first.items():
            if tp in assigned:
                consumer.seek(tp, offset)


class _SettleOnRevoke(ConsumerRebalanceListener):
    """aiokafka awaits this before a rebalance takes partitions away."""

    def __init__(self, pipeline: BatchPipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Let every handled batch commit while this consumer still owns its partitions."""
        await self._pipeline.drain()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Nothing to do: positions come from the committed offsets."""

"""Batches handled in order, finished in stages in the background, offsets committed only after their batch.

A consumed batch's handler does the work that must happen in record order (decode, inference, queueing its
output) and returns what is left as a stage (waiting for the broker's acks; writing Postgres). A stage may
return a further stage (the cache write after the Postgres commit). Each stage level has one task that
runs its stages oldest batch first, so batch n's cache write overlaps batch n+1's Postgres write, and the
handler meanwhile polls and handles the next batch. Only when all of a batch's stages have succeeded are
its own offsets (never the consumer's position, which may be past later batches) committed, in batch order.

`depth` bounds the batches not yet settled (1: every batch settles before the next is handled). If a stage
or a handler fails, no later batch commits; once every batch has settled the pipeline rewinds each partition
to the first uncommitted offset of every fetched batch, without waiting for another poll, so nothing is lost
and what follows is replayed (at least once; the sink stores once).

With `transactions` set (exactly-once), a settled batch's offsets are recorded into the open transactions
instead of committed by the consumer; a checkpoint `paused()` the pipeline (no handler starts, every handled
batch settled) commits them, and a rewind first aborts the open transactions and goes back to the offsets
they started from. The rebalance listener commits (or aborts) before partitions go, and hands new ones over.

Nothing waits on the broker without a bound: an offset commit, and the wait for batches to settle before
partitions are revoked or the consumer stops, give up after `settle_timeout_s`. A commit that gives up
fails the pipeline (and rewinds); unsettled batches at a revoke or a stop stay uncommitted and are replayed
by whoever reads the partition next. A stage or commit whose awaited future was cancelled also fails the
pipeline instead of ending its task, so no later batch waits on a task that no longer runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition

from infra.rounds import stop_if_cancelled

log = logging.getLogger(__name__)

Finish = Callable[[], Awaitable[Any]]
"""A stage of what is left of a batch; it returns the next stage (a Finish) or None when the batch is done."""


class Traced(Protocol):
    """A batch's spans (infra/batch_trace.BatchTrace): the commit is one of its stages, and ends it."""

    def stage(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A span around one stage."""
        ...

    def end(self, error: BaseException | None = None) -> None:
        """End the batch's spans (once)."""
        ...


class Transactional(Protocol):
    """Exactly-once offsets (infra/transactions.py): recorded into transactions, not the consumer's commit."""

    async def record(self, offsets: dict[TopicPartition, int]) -> None:
        """A settled batch's offsets, to commit with the transaction that holds its output."""
        ...

    async def abort(self) -> dict[TopicPartition, int]:
        """Abort every open transaction; the offset each owned partition must be read from again."""
        ...

    async def revoked(self, partitions: set[TopicPartition], settled: bool) -> None:
        """Commit (when settled, else abort) and let go of these partitions."""
        ...

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        """Take these partitions over (fence their previous owner) and seek them to the committed offsets."""
        ...

    async def close(self, settled: bool) -> None:
        """Commit what settled (else abort), and close."""
        ...


@dataclass(frozen=True, slots=True)
class Span:
    """Per partition the first offset of a batch and the offset after its last record."""

    first: dict[TopicPartition, int]
    after: dict[TopicPartition, int]
    records: int = 0

    @classmethod
    def of(cls, records: Sequence[Any]) -> Span:
        """The span of consumed records (aiokafka ConsumerRecords, in fetch order)."""
        first: dict[TopicPartition, int] = {}
        after: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first.setdefault(tp, record.offset)
            after[tp] = record.offset + 1
        return cls(first, after, len(records))


@dataclass(slots=True)
class Unsettled:
    """A batch whose stages and commit have not completed yet."""

    span: Span
    stage: Finish | None
    staged: asyncio.Future[None]  # every stage ran (or one failed)
    done: asyncio.Future[None]  # committed (or given up)
    trace: Traced | None = None


class BatchPipeline:
    """Orders the stages of consumed batches and their offset commits (see the module docstring)."""

    def __init__(self, depth: int, consumer: Callable[[], Any], settle_timeout_s: float = 20.0) -> None:
        self._consumer = consumer  # the subscriber's aiokafka consumer, known only once it started
        self._settle_timeout_s = settle_timeout_s
        self._slots = asyncio.Semaphore(depth)
        self._fetched: list[Span] = []  # every batch handed to handle() and not committed yet
        self._unsettled: list[Unsettled] = []
        self._stages: list[asyncio.Queue[Unsettled]] = []
        self._commits: asyncio.Queue[Unsettled] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: BaseException | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # set while no handler is inside its work
        self._idle.set()
        self.transactions: Transactional | None = None  # exactly-once: set before the consumer starts
        self._open = asyncio.Event()  # cleared while paused: no handler starts its work
        self._open.set()
        self._pause = asyncio.Lock()  # one checkpoint, revoke or abort at a time
        self._closed = False

    async def handle(
        self, records: Sequence[Any], work: Callable[[], Awaitable[Finish | None]],
        trace: Traced | None = None,
    ) -> None:
        """Run `work` on a polled batch now and settle what it returns in order; rewinds after a failure.

        A `trace` is ended once the batch committed or gave up.
        """
        try:
            queued = await self._handle(records, work, trace)
        except BaseException as error:
            if trace is not None:
                trace.end(error)
            raise
        if not queued and trace is not None:
            trace.end()

    async def _handle(
        self, records: Sequence[Any], work: Callable[[], Awaitable[Finish | None]], trace: Traced | None
    ) -> bool:
        span = Span.of(records)
        self._fetched.append(span)  # from now on a rewind covers it
        await self._slots.acquire()
        await self._open.wait()  # returns at once unless a checkpoint or a revoke is running
        if self._closed:  # exactly-once, stopping: the producers are gone; the next owner reads it
            self._slots.release()
            return False
        if self._failure is not None:
            self._slots.release()
            await self.recovered()  # this batch is fetched again after the rewind
            return False
        self._idle.clear()
        try:
            stage = await work()
        except BaseException as error:
            self._slots.release()
            self._idle.set()
            self._fail(error)  # even when cancelled: no later batch may commit past this one
            if not isinstance(error, asyncio.CancelledError):
                await self.recovered()
            raise
        self._idle.set()
        loop = asyncio.get_running_loop()
        item = Unsettled(span, stage, loop.create_future(), loop.create_future(), trace)
        self._unsettled.append(item)
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._commit_forever()))
        self._commits.put_nowait(item)
        self._advance(item, 0)
        return True

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every handled batch has settled (or failed); False if `timeout_s` passed first."""
        waiting = [item.done for item in self._unsettled if not item.done.done()]
        if not waiting:
            return True
        _, late = await asyncio.wait(waiting, timeout=timeout_s)
        return not late

    async def settle(self) -> None:
        """Give handled batches up to the settle timeout to commit; past it, fail (they are replayed)."""
        if not await self.drain(self._settle_timeout_s):
            self._fail(TimeoutError(f"batches did not settle within {self._settle_timeout_s} s"))

    async def close(self) -> None:
        """Let handled batches settle (within the settle timeout), then stop the pipeline's tasks."""
        if not await self.drain(self._settle_timeout_s):
            log.warning("stopping with unsettled batches; they are not committed and will be replayed",
                        extra={"batches": sum(not item.done.done() for item in self._unsettled)})
        if self.transactions is not None:
            self._closed = True
            async with self.paused() as settled:
                await self.transactions.close(settled)
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
            self._recovery = None
        await self.reset()

    async def reset(self) -> None:
        """Forget every unsettled batch without committing it (their partitions are being rewound)."""
        await self._stop_tasks()
        self._forget()

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _forget(self) -> None:
        for item in self._unsettled:
            if not item.done.done():  # never reached by the committer: its slot is still taken
                item.done.set_result(None)
                self._slots.release()
            if item.trace is not None:
                item.trace.end(self._failure)
        self._unsettled.clear()
        self._fetched.clear()
        self._stages.clear()
        self._commits = asyncio.Queue()
        self._failure = None

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[bool]:
        """Hold new batches back; yields whether every handled batch settled (else the pipeline failed)."""
        async with self._pause:
            self._open.clear()
            try:
                yield await self._quiet()
            finally:
                self._open.set()

    async def _quiet(self) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), self._settle_timeout_s)
        except TimeoutError:
            self._fail(TimeoutError(f"a batch was still being handled after {self._settle_timeout_s} s"))
            return False
        await self.settle()
        return self._failure is None

    def fail(self, error: BaseException) -> None:
        """Fail the pipeline from outside (a transaction did not commit): it rewinds once settled."""
        self._fail(error)

    @property
    def in_flight(self) -> int:
        """Records handed to handle() and not committed yet: past the consumer lag, not yet done."""
        return sum(span.records for span in self._fetched)

    @property
    def failed(self) -> bool:
        """A batch failed and the pipeline has not rewound yet."""
        return self._recovery is not None

    def listener(self) -> ConsumerRebalanceListener:
        """Settles every handled batch before partitions are given away, so their offsets commit first."""
        return _SettleOnRevoke(self)

    def _advance(self, item: Unsettled, level: int) -> None:
        """Queue the item's next stage at `level`, or mark it staged when nothing is left."""
        if item.stage is None or self._failure is not None:
            if not item.staged.done():
                item.staged.set_result(None)
            return
        if level == len(self._stages):
            self._stages.append(asyncio.Queue())
            self._tasks.append(asyncio.create_task(self._stage_forever(level)))
        self._stages[level].put_nowait(item)

    async def _stage_forever(self, level: int) -> None:
        while True:
            stop_if_cancelled()  # reset's cancellation, if a stage swallowed it: get() would wait forever
            item = await self._stages[level].get()
            if self._failure is None:
                try:
                    item.stage = await item.stage() if item.stage is not None else None
                except BaseException as error:
                    self._fail_unless_stopping(error)
            self._advance(item, level + 1)

    async def _commit_forever(self) -> None:
        while True:
            stop_if_cancelled()
            item = await self._commits.get()
            try:
                await asyncio.shield(item.staged)
                if self._failure is None:
                    with contextlib.nullcontext() if item.trace is None else item.trace.stage("commit"):
                        await self._commit(item.span.after)
                    self._unsettled.remove(item)
                    self._fetched.remove(item.span)
            except BaseException as error:
                self._fail_unless_stopping(error)
            finally:
                self._slots.release()
                item.done.set_result(None)
                if item.trace is not None:
                    item.trace.end(self._failure)

    def _fail_unless_stopping(self, error: BaseException) -> None:
        """Fail the pipeline; re-raise only when this task itself is being cancelled (by reset)."""
        task = asyncio.current_task()
        if isinstance(error, asyncio.CancelledError) and task is not None and task.cancelling():
            raise error
        self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
            log.warning("batch did not settle; rewinding to its first offsets",
                        extra={"error": repr(error)[:300]})
        for item in self._unsettled:  # no later stage runs: let every batch reach the committer
            if not item.staged.done():
                item.staged.set_result(None)
        if self._recovery is None:
            # Not left to the next poll: with nothing new to fetch, no handler would ever run again.
            self._recovery = asyncio.create_task(self._recover())

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.transactions is not None:
            await self.transactions.record(offsets)
            return
        consumer = self._consumer()
        if consumer is not None and offsets:
            await asyncio.wait_for(consumer.commit(offsets), self._settle_timeout_s)

    async def recovered(self) -> None:
        """Wait until a pending rewind (after a failure) has run."""
        if self._recovery is not None:
            await asyncio.wait([self._recovery])  # neither raises its cancellation nor cancels it

    async def _recover(self) -> None:
        """Once no handler is inside its work and every batch settled: rewind all fetched, start afresh."""
        await self._idle.wait()
        await self.drain()
        await self._stop_tasks()
        starts: dict[TopicPartition, int] = {}
        if self.transactions is not None:  # their output must not commit: read them again from the start
            async with self._pause:
                starts = await self.transactions.abort()
        # No await from here on: a batch handed to handle() meanwhile is either in the rewind or handled
        # after it, never dropped (seen failed) and then forgotten unrewound.
        self._rewind(self._fetched, starts)
        self._forget()
        self._recovery = None

    def _rewind(self, spans: Sequence[Span], starts: dict[TopicPartition, int] | None = None) -> None:
        """Seek each partition to the first offset any of the spans (or `starts`) holds for it."""
        consumer = self._consumer()
        if consumer is None:
            return
        assigned = consumer.assignment()
        first: dict[TopicPartition, int] = dict(starts or {})
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
        """Let every handled batch commit while this consumer still owns its partitions (bounded)."""
        transactions = self._pipeline.transactions
        if transactions is None:
            await self._pipeline.settle()
            return
        async with self._pipeline.paused() as settled:
            await transactions.revoked(set(revoked), settled)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """At least once: nothing (positions come from the committed offsets). Exactly once: take over."""
        if self._pipeline.transactions is not None:
            await self._pipeline.transactions.assigned(set(assigned))

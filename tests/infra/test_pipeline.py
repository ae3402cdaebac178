"""The batch pipeline on the real broker: a batch's own offsets commit after it settles; failures rewind."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.consumer import rewind
from infra.kafka import ensure_topics, topic_name
from infra.pipeline import BatchPipeline, Finish
from infra.settings import KafkaSettings
from streamscore.embedded import TansuBroker

MESSAGES = 300


async def filled_topic(settings: KafkaSettings, messages: int) -> str:
    """The settings' 3-partition `pipeline` topic, holding `messages` values spread over it by key."""
    await ensure_topics(settings, ("pipeline",))
    name = topic_name(settings, "pipeline")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(messages):
            await producer.send(name, b"%d" % i, key=b"k%d" % (i % 7))
        await producer.flush()
    finally:
        await producer.stop()
    return name


@pytest.fixture
async def topic(kafka_settings: KafkaSettings) -> str:
    """A 3-partition topic holding MESSAGES values, spread over its partitions by key."""
    return await filled_topic(kafka_settings, MESSAGES)


async def consumer_of(settings: KafkaSettings, topic: str, group: str) -> AIOKafkaConsumer:
    """A started consumer of `topic` in `group` that never commits by itself, its partitions assigned."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=40,
    )
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=200)
    return consumer


Pipelined = tuple[AIOKafkaConsumer, BatchPipeline, str]


@pytest.fixture
async def pipelined(kafka_settings: KafkaSettings, topic: str) -> AsyncIterator[Pipelined]:
    """A consumer of the topic in a new group, its pipeline (depth 2), and the topic; closed afterwards."""
    consumer = await consumer_of(kafka_settings, topic, f"g-{uuid.uuid4().hex[:8]}")
    pipeline = BatchPipeline(2, lambda: consumer)
    try:
        yield consumer, pipeline, topic
    finally:
        await pipeline.close()
        await consumer.stop()


async def fetched_again(consumer: AIOKafkaConsumer, records: list[Any]) -> None:
    """Poll until every one of the records has been fetched again (rewound, not skipped)."""
    wanted = {(r.partition, r.offset) for r in records}
    again: set[tuple[int, int]] = set()
    async with asyncio.timeout(20):
        while not wanted <= again:
            polled = await consumer.getmany(timeout_ms=500)
            again |= {(r.partition, r.offset) for rs in polled.values() for r in rs}


async def committed(consumer: AIOKafkaConsumer, topic: str) -> dict[int, int | None]:
    """The group's committed offset per partition."""
    return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(3)}


async def test_failed_finish_rewinds_and_every_record_is_settled(pipelined: Pipelined) -> None:
    consumer, pipeline, topic = pipelined
    settled: Counter[bytes] = Counter()
    ends: dict[int, int] = {}
    failures = 2

    def work_of(records: Any) -> Any:
        async def work() -> Finish:
            async def finish() -> None:
                nonlocal failures
                await asyncio.sleep(0.01)
                if failures and len(settled) > 50:
                    failures -= 1
                    raise ConnectionError("broker went away")
                settled.update(r.value for r in records)
                for r in records:
                    ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)

            return finish

        return work

    async with asyncio.timeout(60):
        while len(settled) < MESSAGES:
            batch = [r for rs in (await consumer.getmany(timeout_ms=200)).values() for r in rs]
            if batch:
                await pipeline.handle(batch, work_of(batch))
        await pipeline.drain()
    assert failures == 0
    assert set(settled) == {b"%d" % i for i in range(MESSAGES)}  # nothing skipped past a failure
    assert sum(ends.values()) == MESSAGES  # (Tansu's end offsets trail: the records tell the ends)
    assert await committed(consumer, topic) == ends


async def test_a_batch_commits_its_own_offsets_only_after_it_settled(pipelined: Pipelined) -> None:
    consumer, pipeline, topic = pipelined
    release = asyncio.Event()
    handled_second = asyncio.Event()

    async def slow() -> Finish:
        async def finish() -> None:
            await release.wait()

        return finish

    async def fast() -> None:
        handled_second.set()

    first = [r for rs in (await consumer.getmany(timeout_ms=1000)).values() for r in rs]
    await pipeline.handle(first, slow)
    second: list[Any] = []
    while not second:
        second = [r for rs in (await consumer.getmany(timeout_ms=1000)).values() for r in rs]
    await pipeline.handle(second, fast)  # handled while the first batch has not settled
    await asyncio.sleep(0.2)
    assert handled_second.is_set()
    assert set((await committed(consumer, topic)).values()) == {None}  # nothing before the first settles
    assert pipeline.in_flight == len(first) + len(second)  # past the consumer's position, not committed
    release.set()
    await pipeline.drain()
    assert pipeline.in_flight == 0
    after: dict[int, int] = {}
    for record in [*first, *second]:
        after[record.partition] = record.offset + 1
    assert {p: o for p, o in (await committed(consumer, topic)).items() if o is not None} == after


async def test_the_broker_restart_rewind_overwrites_stale_committed_offsets(pipelined: Pipelined) -> None:
    """After an empty restart the group may hold offsets of the lost incarnation: rewind commits the start."""
    consumer, pipeline, topic = pipelined
    seen: list[Any] = []
    async with asyncio.timeout(20):
        while len(seen) < MESSAGES:
            seen += [r for rs in (await consumer.getmany(timeout_ms=500)).values() for r in rs]
    stale = {TopicPartition(topic, p): n for p, n in Counter(r.partition for r in seen).items()}
    await consumer.commit(stale)  # as a commit retried into the new incarnation would leave them
    await rewind(pipeline, consumer, timeout_s=5.0)
    assert await committed(consumer, topic) == {0: 0, 1: 0, 2: 0}
    await fetched_again(consumer, seen)


async def test_a_failing_handler_rewinds_its_batch(pipelined: Pipelined) -> None:
    consumer, pipeline, _ = pipelined

    async def broken() -> None:
        raise RuntimeError("model not loaded")

    first = [r for rs in (await consumer.getmany(timeout_ms=1000)).values() for r in rs]
    with pytest.raises(RuntimeError):
        await pipeline.handle(first, broken)
    await fetched_again(consumer, first)


async def test_a_failed_stage_rewinds_even_when_nothing_more_is_polled(pipelined: Pipelined) -> None:
    consumer, pipeline, topic = pipelined

    async def failing_second_stage() -> Finish:
        async def store() -> Finish:
            async def cache() -> None:
                raise ConnectionError("redis went away")

            return cache

        return store

    first = [r for rs in (await consumer.getmany(timeout_ms=1000)).values() for r in rs]
    await pipeline.handle(first, failing_second_stage)
    await pipeline.drain()
    await asyncio.sleep(0.1)  # the recovery runs by itself: no further handle() call
    await fetched_again(consumer, first)
    assert set((await committed(consumer, topic)).values()) == {None}


async def test_a_stage_whose_future_was_cancelled_fails_the_pipeline_instead_of_wedging_it(
    pipelined: Pipelined,
) -> None:
    consumer, pipeline, topic = pipelined
    lost_ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def awaits_a_cancelled_ack() -> Finish:
        async def finish() -> None:
            await lost_ack  # a producer future cancelled under us (the producer was closed)

        return finish

    async def nothing_left() -> None:
        return None

    first = [r for rs in (await consumer.getmany(timeout_ms=1000)).values() for r in rs]
    await pipeline.handle(first, awaits_a_cancelled_ack)
    lost_ack.cancel()
    await fetched_again(consumer, first)  # rewound by the recovery
    assert set((await committed(consumer, topic)).values()) == {None}
    again = [r for rs in (await consumer.getmany(timeout_ms=1000)).values() for r in rs]
    async with asyncio.timeout(10):  # the stage task still runs: a later batch settles and commits
        await pipeline.handle(again, nothing_left)
        await pipeline.drain()
    assert any(offset is not None for offset in (await committed(consumer, topic)).values())


async def test_reset_stops_a_stage_that_swallowed_its_cancellation(pipelined: Pipelined) -> None:
    consumer, pipeline, _ = pipelined
    ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = asyncio.Event()

    async def awaits_its_ack() -> Finish:
        async def finish() -> None:
            waiting.set()
            await asyncio.wait_for(ack, 10)  # as a client's request does

        return finish

    first = [r for rs in (await consumer.getmany(timeout_ms=1000)).values() for r in rs]
    await pipeline.handle(first, awaits_its_ack)
    await waiting.wait()
    ack.set_result(None)  # the ack lands in the loop iteration reset cancels the stage (Python 3.11 then
    async with asyncio.timeout(5):  # returns it from wait_for and drops the cancellation: infra/rounds.py)
        await pipeline.reset()


async def test_settling_before_a_revoke_and_closing_give_up_after_the_settle_timeout(
    kafka_settings: KafkaSettings, topic: str
) -> None:
    consumer = await consumer_of(kafka_settings, topic, f"g-{uuid.uuid4().hex[:8]}")
    pipeline = BatchPipeline(2, lambda: consumer, settle_timeout_s=0.5)
    never = asyncio.Event()

    async def stuck() -> Finish:
        async def finish() -> None:
            await never.wait()  # a stage that does not finish while partitions are taken away

        return finish

    try:
        first = [r for rs in (await consumer.getmany(timeout_ms=1000)).values() for r in rs]
        await pipeline.handle(first, stuck)
        async with asyncio.timeout(5):
            await pipeline.listener().on_partitions_revoked(consumer.assignment())
        assert set((await committed(consumer, topic)).values()) == {None}  # left to be replayed
        async with asyncio.timeout(5):
            await pipeline.close()
    finally:
        never.set()
        await consumer.stop()


async def test_a_commit_to_a_broker_that_stopped_answering_gives_up_and_rewinds() -> None:
    broker = TansuBroker().start()
    try:
        settings = KafkaSettings(kafka_bootstrap=broker.bootstrap, kafka_partitions=3, kafka_idempotent=False,
                                 topic_prefix=f"f{uuid.uuid4().hex[:6]}.")
        name = await filled_topic(settings, 30)
        consumer = await consumer_of(settings, name, "frozen")
        pipeline = BatchPipeline(1, lambda: consumer, settle_timeout_s=1.0)

        async def nothing_left() -> None:
            return None

        first = [r for rs in (await consumer.getmany(timeout_ms=1000)).values() for r in rs]
        assert broker.process is not None
        broker.process.send_signal(signal.SIGSTOP)  # connections stay open, nothing answers
        try:
            async with asyncio.timeout(10):
                await pipeline.handle(first, nothing_left)
                await pipeline.drain()
                assert pipeline.failed  # the commit gave up
                await pipeline.recovered()  # and the pipeline rewound by itself
        finally:
            broker.process.send_signal(signal.SIGCONT)
        await fetched_again(consumer, first)
        ends = {r.partition: r.offset + 1 for r in first}
        for partition, offset in (await committed(consumer, name)).items():
            # aiokafka may still deliver the abandoned request after the thaw: never past the batch
            assert offset is None or offset == ends.get(partition)
        await pipeline.close()
        await consumer.stop()
    finally:
        broker.stop()

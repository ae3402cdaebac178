"""The batch pipeline on the real broker: a batch's own offsets commit after it settles; failures rewind."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.kafka import ensure_topics, topic_name
from infra.pipeline import BatchPipeline, Finish
from infra.settings import KafkaSettings

MESSAGES = 300


@pytest.fixture
async def topic(kafka_settings: KafkaSettings) -> AsyncIterator[str]:
    """A 3-partition topic holding MESSAGES values, spread over its partitions by key."""
    await ensure_topics(kafka_settings, ("pipeline",))
    name = topic_name(kafka_settings, "pipeline")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap, acks="all")
    await producer.start()
    for i in range(MESSAGES):
        await producer.send(name, b"%d" % i, key=b"k%d" % (i % 7))
    await producer.flush()
    yield name


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
    release.set()
    await pipeline.drain()
    after: dict[int, int] = {}
    for record in [*first, *second]:
        after[record.partition] = record.offset + 1
    assert {p: o for p, o in (await committed(consumer, topic)).items() if o is not None} == after


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

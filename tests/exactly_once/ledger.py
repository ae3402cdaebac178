"""An independent read_committed reader of predictions.v1: how often each event_id was seen."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer

from infra.kafka import topic_name
from infra.settings import KafkaSettings
from schemas import topics


async def committed_event_ids(settings: KafkaSettings, expected: set[str], within_s: float,
                              quiet_s: float = 3.0, isolation: str = "read_committed") -> Counter[str]:
    """Read predictions.v1 from the start as downstream teams do (read_committed, no group) until every
    expected event_id was seen and nothing new came for `quiet_s` (late duplicates), or `within_s` passed.

    With isolation="read_uncommitted" it also counts the records of aborted transactions.
    """
    consumer = AIOKafkaConsumer(
        topic_name(settings, topics.PREDICTIONS), bootstrap_servers=settings.kafka_bootstrap,
        group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
        isolation_level=isolation,
    )
    await consumer.start()
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + within_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                for record in records:
                    seen[orjson.loads(record.value)["event_id"]] += 1
                    last_new = time.monotonic()
            if expected <= set(seen) and time.monotonic() - last_new > quiet_s:
                break
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return seen


def tally(seen: Counter[str], expected: set[str]) -> dict[str, int]:
    """Records read, distinct ids, ids missing, and repeats (records beyond the first per id)."""
    return {"records": sum(seen.values()), "distinct": len(seen), "lost": len(expected - set(seen)),
            "duplicates": sum(seen.values()) - len(seen)}


async def group_offsets(settings: KafkaSettings, group: str) -> dict[tuple[str, int], int]:
    """The offsets a group has committed, read with the admin API (no join, no metadata wait)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


async def output_ahead(settings: KafkaSettings, group: str, grown: int, ahead: int, within_s: float,
                       freeze: Callable[[], None], thaw: Callable[[], None]) -> None:
    """Return, with the scorer frozen, once predictions.v1 grew by `grown` records since the call and holds
    at least `ahead` more records (committed or not) than the group has committed input offsets: output
    published, input not committed yet, the moment a kill repeats output without transactions.

    Each look is taken with the scorer frozen (SIGSTOP, then a pause for what it had already sent to land),
    so the state seen is the state the kill meets: on a quiet host the commit follows the output within
    milliseconds, and a look at a running scorer was stale by the time the kill landed (0 duplicates at
    least once, in CI).
    """
    from aiokafka import TopicPartition

    topic = topic_name(settings, topics.PREDICTIONS)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        start = sum((await consumer.end_offsets(partitions)).values())
        deadline = time.monotonic() + within_s
        while True:
            assert time.monotonic() < deadline, f"{topic} did not run ahead of {group} within {within_s} s"
            if sum((await consumer.end_offsets(partitions)).values()) < start + grown:
                await asyncio.sleep(0.05)
                continue
            freeze()
            await asyncio.sleep(LANDING_S)
            published = sum((await consumer.end_offsets(partitions)).values())
            committed = sum((await group_offsets(settings, group)).values())
            if published - committed >= ahead:
                return
            thaw()
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()


LANDING_S = 0.3
"""After a SIGSTOP: time for requests the scorer had already written to its sockets to reach the broker."""

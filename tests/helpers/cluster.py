"""A three-broker cluster under faults: partition leaders and their load, in-sync waits, rows stored when."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from infra.kafka import topic_name
from infra.kafka_connection import connection_options
from infra.settings import KafkaSettings
from tests.helpers.pipeline import count


async def describe_topics(settings: KafkaSettings) -> list[dict[str, Any]]:
    """Every topic's metadata (each partition's leader, replicas and in-sync replicas)."""
    admin = AIOKafkaAdminClient(**connection_options(settings), request_timeout_ms=5000)
    await admin.start()
    try:
        return list(await admin.describe_topics())
    finally:
        await admin.close()


async def records_per_leader(settings: KafkaSettings, bases: tuple[str, ...]) -> Counter[int]:
    """Per broker, the records held by the partitions it leads among these topics (their end offsets)."""
    names = {topic_name(settings, base) for base in bases}
    leaders = {TopicPartition(t["topic"], p["partition"]): p["leader"]
               for t in await describe_topics(settings) if t["topic"] in names for p in t["partitions"]}
    consumer = AIOKafkaConsumer(**connection_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(leaders))
    finally:
        await consumer.stop()
    load: Counter[int] = Counter()
    for tp, leader in leaders.items():
        load[leader] += ends[tp]
    return load


async def busiest_leader(settings: KafkaSettings, bases: tuple[str, ...]) -> tuple[int, dict[int, int]]:
    """The broker leading the partitions with the most records of these topics, and each broker's load."""
    load = await records_per_leader(settings, bases)
    return load.most_common(1)[0][0], dict(sorted(load.items()))


async def out_of_sync(settings: KafkaSettings) -> list[str]:
    """Partitions (of every topic, the consumer offsets too) with no leader or a replica out of sync."""
    return [f"{t['topic']}-{p['partition']} leader={p['leader']} isr={p['isr']}"
            for t in await describe_topics(settings) for p in t["partitions"]
            if p["leader"] < 0 or set(p["isr"]) != set(p["replicas"])]


async def wait_in_sync(settings: KafkaSettings, within_s: float = 90.0) -> float:
    """Wait until every partition has a leader and all its replicas in sync; the seconds it took.

    A rolling restart stops the next broker only then: before, the restarted one is still catching up, and
    a partition could be left with fewer in-sync replicas than min.insync.replicas.
    """
    started = time.monotonic()
    lagging: list[str] = ["not asked yet"]
    while time.monotonic() - started < within_s:
        try:
            lagging = await out_of_sync(settings)
        except Exception as error:  # a broker still starting: ask again
            lagging = [repr(error)]
        if not lagging:
            return round(time.monotonic() - started, 2)
        await asyncio.sleep(0.5)
    raise AssertionError(f"replicas not in sync after {within_s:.0f} s: {lagging[:5]}")


@dataclass
class StoredRows:
    """Samples the predictions table's row count on a background task, to time recovery from a fault."""

    database_url: str
    every_s: float = 0.2
    samples: list[tuple[float, int]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), await count(self.database_url, "predictions")))
            await asyncio.sleep(self.every_s)

    def start(self) -> StoredRows:
        """Begin sampling."""
        self.task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        """Stop sampling (one last sample first)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.samples.append((time.monotonic(), await count(self.database_url, "predictions")))

    def recovery(self, fault_at: float) -> dict[str, float]:
        """Seconds from the fault to the first row stored after it and to the last row stored, and the
        longest time after the fault in which no row was stored while more were to come."""
        after = [(t, n) for t, n in self.samples if t >= fault_at]
        before = [n for t, n in self.samples if t < fault_at]
        at_fault = before[-1] if before else 0
        final = after[-1][1] if after else at_fault
        first = next((t for t, n in after if n > at_fault), None)
        last = next((t for t, n in after if n >= final), fault_at)
        stall, moved_at, seen = 0.0, fault_at, at_fault
        for t, n in after:
            if n > seen:
                stall, moved_at, seen = max(stall, t - moved_at), t, n
        return {"first_row_s": round(first - fault_at, 2) if first is not None else -1.0,
                "last_row_s": round(last - fault_at, 2), "longest_stall_s": round(stall, 2)}

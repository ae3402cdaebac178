"""Pipeline counters, windowed latency percentiles, consumer lag, and the best-effort Redis stats hash."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.redis_client import redis_client
from infra.rounds import sleep_or_stop

log = logging.getLogger(__name__)

STATS_TTL_SECONDS = 15
STATS_INDEX_KEY = "stats:live"
"""Sorted set of the stats hash keys by last write: readers find them without a SCAN of the whole database
(the prediction cache fills it: ~1 s for 350k keys at COUNT 100, 0.4 s at 1000, measured)."""
INDEX_KEEP_SECONDS = 10 * STATS_TTL_SECONDS
"""Index members older than this (by the writer's clock) are pruned; generous, so clock skew is harmless."""


def queue_stats_write(pipe: Any, key: str, fields: dict[str, str], now: float) -> None:
    """Queue one stats write on a Redis pipeline: the hash (TTL'd) and its entry in the index."""
    pipe.hset(key, mapping=fields)
    pipe.expire(key, STATS_TTL_SECONDS)
    pipe.zadd(STATS_INDEX_KEY, {key: now})
    pipe.zremrangebyscore(STATS_INDEX_KEY, "-inf", now - INDEX_KEEP_SECONDS)
    pipe.expire(STATS_INDEX_KEY, INDEX_KEEP_SECONDS)


async def indexed_stats_keys(redis: Any, prefix: str) -> list[str]:
    """The indexed stats hash keys starting with `prefix`, sorted (some may have expired: check the hash)."""
    members = await redis.zrange(STATS_INDEX_KEY, 0, -1)
    keys = (m.decode() if isinstance(m, bytes) else str(m) for m in members)
    return sorted(key for key in keys if key.startswith(prefix))


def instance_id() -> str:
    """This process's id in stats keys: host name and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class LatencyWindow:
    """Latency samples of the last `window_s` seconds, for p50/p99."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    def record(self, milliseconds: float) -> None:
        """Add one sample taken now."""
        self._samples.append((time.monotonic(), milliseconds))

    def percentiles(self) -> tuple[float, float]:
        """(p50, p99) in ms over the window; (0, 0) when empty."""
        horizon = time.monotonic() - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        if not self._samples:
            return 0.0, 0.0
        p50, p99 = np.percentile([ms for _, ms in self._samples], [50, 99])
        return float(p50), float(p99)


@dataclass
class PipelineStats:
    """Cumulative counters of one service instance, published to the dashboard."""

    events_in: int = 0
    events_out: int = 0
    dlq: int = 0
    batches: int = 0
    lag: int = 0
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    providers: list[Callable[[], dict[str, str]]] = field(default_factory=list)
    """Extra service-specific fields (e.g. the scorer's shadow comparison and drift), read at each write."""

    def snapshot(self) -> dict[str, str]:
        """The Redis hash fields."""
        p50, p99 = self.latency.percentiles()
        extra: dict[str, str] = {}
        for provider in self.providers:
            extra.update(provider())
        return extra | {
            "events_in": str(self.events_in),
            "events_out": str(self.events_out),
            "dlq": str(self.dlq),
            "batches": str(self.batches),
            "lag": str(self.lag),
            "p50_ms": f"{p50:.3f}",
            "p99_ms": f"{p99:.3f}",
            "updated_at": f"{time.time():.3f}",
        }


class EndOffsets:
    """Each partition's real end offset, from the records themselves.

    A broker's listed end offset (ListOffsets, or a fetch's highwater) may trail the data: Tansu lists the
    base offset of a partition's last batch. So this group-less consumer reads from the listed end and
    moves the end past every record it finds there; on a broker whose listing is right it finds none.
    """

    def __init__(self, connection: dict[str, Any], rounds: int = 5) -> None:
        self.rounds = rounds
        self._connection = connection  # infra.kafka_connection.connection_options
        self._consumer: AIOKafkaConsumer | None = None  # built at first use, so a stop always closes it

    async def stop(self) -> None:
        """Close the probe's connections (an unclosed aiokafka consumer logs an error when collected)."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def ends(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offset (one past the last record) of each partition."""
        consumer = self._consumer
        if consumer is None:
            consumer = self._consumer = AIOKafkaConsumer(
                **self._connection, group_id=None, enable_auto_commit=False,
                fetch_max_wait_ms=50,
                # The end a read_committed consumer can reach (the last stable offset), as the services read.
                isolation_level="read_committed",
            )
            await consumer.start()
        listed: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        for partition in partitions:
            consumer.seek(partition, listed[partition])
        ends = dict(listed)
        timeout_ms = 500  # the first fetch after a seek takes a round trip; later ones only drain
        for _ in range(self.rounds):
            batch = await consumer.getmany(*partitions, timeout_ms=timeout_ms)
            if not batch:
                break
            for partition, records in batch.items():
                ends[partition] = max(ends[partition], records[-1].offset + 1)
            timeout_ms = 50
        consumer.pause(*partitions)  # no prefetching between probes
        return ends


async def consumer_lag(consumer: AIOKafkaConsumer | None, probe: EndOffsets) -> dict[TopicPartition, int]:
    """Real end offset minus position for each assigned partition whose position is known."""
    if consumer is None:
        return {}
    partitions = sorted(consumer.assignment())
    if not partitions:
        return {}
    ends = await probe.ends(partitions)
    lag: dict[TopicPartition, int] = {}
    for partition in partitions:
        with contextlib.suppress(Exception):  # partition revoked or position not fetched yet
            position = await asyncio.wait_for(consumer.position(partition), timeout=0.5)
            lag[partition] = max(0, ends[partition] - position)
    return lag


STATS_CLOSE_TIMEOUT_S = 2.0


async def publish_stats_forever(
    redis_url: str, key: str, stats: PipelineStats, interval_s: float = 1.0
) -> None:
    """Every interval, write the stats hash (TTL 15 s) and index it; failures are logged, never raised."""
    client = redis_client(redis_url, socket_connect_timeout=0.5, socket_timeout=1.0)
    failing = False
    try:
        while True:
            try:
                fields: dict[Any, Any] = stats.snapshot()
                async with client.pipeline(transaction=False) as pipe:
                    queue_stats_write(pipe, key, fields, time.time())
                    await pipe.execute()
                failing = False
            except Exception as error:  # the dashboard is optional; the pipeline must not care
                if not failing:
                    log.warning("stats write to Redis failed", extra={"key": key, "error": str(error)})
                failing = True
            await sleep_or_stop(interval_s)
    finally:
        # Bounded: a connection cut mid-command by the cancellation must not hold up the service's stop.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), STATS_CLOSE_TIMEOUT_S)


async def track_lag_forever(
    consumers: Callable[[], list[AIOKafkaConsumer | None]],
    stats: PipelineStats,
    on_partition: Callable[[TopicPartition, int], None],
    connection: dict[str, Any],
    interval_s: float = 1.0,
) -> None:
    """Every interval, refresh per-partition lag (reported via on_partition) and its sum in stats.

    When the broker cannot be asked, `stats.lag` is -1: unknown, never a reassuring 0.
    """
    probe = EndOffsets(connection)
    failing = False
    try:
        while True:
            try:
                total = 0
                for consumer in consumers():
                    for partition, lag in (await consumer_lag(consumer, probe)).items():
                        on_partition(partition, lag)
                        total += lag
                stats.lag = total
                failing = False
            except Exception as error:  # lag is a gauge; the pipeline must not care
                if not failing:
                    log.warning("consumer lag unknown", extra={"error": str(error)})
                failing = True
                stats.lag = -1
            await sleep_or_stop(interval_s)
    finally:
        await probe.stop()

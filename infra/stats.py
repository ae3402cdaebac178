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
from redis.asyncio import Redis

log = logging.getLogger(__name__)

STATS_TTL_SECONDS = 15


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


async def consumer_lag(consumer: AIOKafkaConsumer | None) -> dict[TopicPartition, int]:
    """Highwater minus position for each assigned partition whose highwater is known."""
    if consumer is None:
        return {}
    lag: dict[TopicPartition, int] = {}
    for partition in consumer.assignment():
        highwater = consumer.highwater(partition)
        if highwater is None:
            continue
        with contextlib.suppress(Exception):  # partition revoked or position not fetched yet
            position = await asyncio.wait_for(consumer.position(partition), timeout=0.5)
            lag[partition] = max(0, highwater - position)
    return lag


async def publish_stats_forever(
    redis_url: str, key: str, stats: PipelineStats, interval_s: float = 1.0
) -> None:
    """Every interval, write the stats hash (TTL 15 s); failures are logged, never raised."""
    client = Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=1.0)
    failing = False
    try:
        while True:
            try:
                fields: dict[Any, Any] = stats.snapshot()
                async with client.pipeline(transaction=False) as pipe:
                    pipe.hset(key, mapping=fields)
                    pipe.expire(key, STATS_TTL_SECONDS)
                    await pipe.execute()
                failing = False
            except Exception as error:  # the dashboard is optional; the pipeline must not care
                if not failing:
                    log.warning("stats write to Redis failed", extra={"key": key, "error": str(error)})
                failing = True
            await asyncio.sleep(interval_s)
    finally:
        await client.aclose()


async def track_lag_forever(
    consumers: Callable[[], list[AIOKafkaConsumer | None]],
    stats: PipelineStats,
    on_partition: Callable[[TopicPartition, int], None],
    interval_s: float = 1.0,
) -> None:
    """Every interval, refresh per-partition lag (reported via on_partition) and its sum in stats."""
    while True:
        total = 0
        for consumer in consumers():
            for partition, lag in (await consumer_lag(consumer)).items():
                on_partition(partition, lag)
                total += lag
        stats.lag = total
        await asyncio.sleep(interval_s)

"""Fault injection on real engines: private Redis and Tansu processes, service subprocesses, stopwatch."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from aiokafka import AIOKafkaProducer

from infra.kafka import producer_options
from infra.settings import KafkaSettings
from schemas.messages import FeatureEvent
from streamscore.embedded import TansuBroker, free_port, port_open, redis_server_binary, wait_for_port
from tests.helpers.cache import cached_prediction
from tests.helpers.pipeline import count, fetch

SCORER_START_S = 150.0  # TensorFlow loads in 10-45 s on a loaded 2-core machine, then a ~5 s group join


@dataclass
class PrivateRedis:
    """A redis-server of the test's own (append-only file, so a restart keeps the keys it had)."""

    port: int = field(default_factory=free_port)
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ss-faults-redis-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        """Start (again) on the same port and directory."""
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.home)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        """SIGTERM and wait (the append-only file keeps the data)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def freeze(self) -> None:
        """SIGSTOP: the TCP connections stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def kill_broker(broker: TansuBroker) -> None:
    """SIGKILL a Tansu broker (memory-only: its topics and offsets are gone)."""
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait(10)
    broker.process = None
    deadline = time.monotonic() + 10
    while port_open("127.0.0.1", broker.port) and time.monotonic() < deadline:
        time.sleep(0.05)


def service_env(kafka: KafkaSettings, database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """STREAMSCORE_ variables that point a service subprocess at the test's broker, database and Redis."""
    env = {
        "STREAMSCORE_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
        "STREAMSCORE_KAFKA_PARTITIONS": str(kafka.kafka_partitions),
        "STREAMSCORE_KAFKA_IDEMPOTENT": str(kafka.kafka_idempotent).lower(),
        "STREAMSCORE_KAFKA_REPLICATION_FACTOR": str(kafka.kafka_replication_factor),
        "STREAMSCORE_TOPIC_PREFIX": kafka.topic_prefix,
        "STREAMSCORE_DATABASE_URL": database_url,
        "STREAMSCORE_REDIS_URL": redis_url,
    }
    return {**env, **{f"STREAMSCORE_{key.upper()}": value for key, value in extra.items()}}


def service_process(
    service: str, env: dict[str, str], log_path: Path, *args: str
) -> subprocess.Popen[bytes]:
    """`streamscore <service> [args]` as a child process with the given STREAMSCORE_ settings, logging to a
    file."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-c", "from streamscore.cli import main; main()", service, *args],
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def sigkill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap."""
    process.kill()
    process.wait(10)


class Stopwatch:
    """Seconds since it was made (recovery times for the report)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.started, 2)


def report(scenario: str, **figures: Any) -> None:
    """One line for the fault report."""
    print(f"FAULT {scenario}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def keyed(events: list[FeatureEvent]) -> list[tuple[bytes | None, bytes]]:
    """(customer key, JSON) pairs as the API publishes them."""
    return [(e.customer_id.encode(), e.model_dump_json().encode()) for e in events]


@contextlib.asynccontextmanager
async def started(*apps: Any) -> AsyncIterator[None]:
    """Start apps in order, stop them in reverse."""
    for app in apps:
        await app.start()
    try:
        yield
    finally:
        for app in reversed(apps):
            await app.stop()


async def cache_mismatches(redis_url: str, database_url: str, model_version: str) -> int:
    """Customers whose Redis value is missing or not their latest prediction in Postgres."""
    latest = await fetch(database_url, "SELECT customer_id, last_event_id FROM customers")
    client = redis.from_url(redis_url, socket_timeout=2)
    try:
        values = await client.mget([f"predict:{r['customer_id']}:{model_version}" for r in latest])
    finally:
        await client.aclose()
    cached = [cached_prediction(v) for v in values]
    return sum(p is None or p.event_id != r["last_event_id"] for r, p in zip(latest, cached, strict=True))


async def settled_cache_mismatches(
    redis_url: str, database_url: str, model_version: str, within_s: float = 10.0
) -> int:
    """cache_mismatches once it is 0, else its count after `within_s`; call it while the sink runs.

    The sink writes Redis after a batch's Postgres commit (and repairs noted keys every 0.5 s), so right
    after the last row is stored the last batch's keys may not be cached yet.
    """
    deadline = time.monotonic() + within_s
    while True:
        stale = await cache_mismatches(redis_url, database_url, model_version)
        if stale == 0 or time.monotonic() >= deadline:
            return stale
        await asyncio.sleep(0.1)


def stored_at_least(database_url: str, floor: int) -> Callable[[], Awaitable[bool]]:
    """A wait_for predicate: the predictions table holds at least `floor` rows."""

    async def predicate() -> bool:
        return await count(database_url, "predictions") >= floor

    return predicate


async def exactly_once(database_url: str, ids: list[str]) -> dict[str, int]:
    """Stored, lost and duplicated of these event ids (one customer per event: a re-insert counts twice)."""
    stored = len(await stored_ids(database_url, ids))
    rows = await fetch(database_url, "SELECT coalesce(sum(predictions_count), 0) AS n FROM customers")
    counted = rows[0]["n"]
    return {"sent": len(ids), "stored": stored, "lost": len(ids) - stored,
            "duplicated": int(counted) - stored,
            "dead_lettered": await count(database_url, "dead_letters")}


async def stored_ids(database_url: str, ids: list[str]) -> set[str]:
    """Which of these event ids Postgres holds."""
    rows = await fetch(database_url, "SELECT event_id FROM predictions WHERE event_id = ANY($1::uuid[])", ids)
    return {str(r["event_id"]) for r in rows}


class Stream:
    """Produces messages in paced chunks on a background task, so faults land while events flow."""

    def __init__(self, settings: KafkaSettings, topic: str, messages: list[tuple[bytes | None, bytes]],
                 chunk: int = 20, tick_s: float = 0.1) -> None:
        self.settings, self.topic, self.messages = settings, topic, messages
        self.chunk, self.tick_s, self.sent, self.stopping = chunk, tick_s, 0, False
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap,
                                    **producer_options(self.settings))
        await producer.start()
        try:
            while self.sent < len(self.messages) and not self.stopping:
                part = self.messages[self.sent:self.sent + self.chunk]
                futures = [await producer.send(self.topic, value, key=key) for key, value in part]
                await asyncio.gather(*futures)
                self.sent += len(part)
                await asyncio.sleep(self.tick_s)
        finally:
            await producer.stop()

    def start(self) -> Stream:
        """Begin producing."""
        self.task = asyncio.create_task(self._run())
        return self

    async def finished(self, stop: bool = False) -> int:
        """Wait until every message (or, with stop, every one begun) was acknowledged; the count sent."""
        assert self.task is not None
        self.stopping = stop
        await self.task
        return self.sent

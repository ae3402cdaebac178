"""One pipeline bench run's scratch database, broker, topics and service processes, torn down afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as redis
from sqlalchemy.engine import make_url

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from migrations.runner import upgrade_head
from schemas import topics
from streamscore.embedded import TansuBroker
from streamscore.kafka_server import KafkaCluster

ADMIN_URL = make_url(
    os.environ.get("STREAMSCORE_BENCH_ADMIN_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
)
"""The server the scratch databases are made on (bench_sink_store reads the same variable)."""
ADMIN_DSN = ADMIN_URL.set(drivername="postgresql").render_as_string(hide_password=False)
STREAMSCORE = Path(sys.executable).with_name("streamscore")


def start_service(service: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`streamscore <service>` as a child process logging to a file."""
    return start_process([str(STREAMSCORE), service], env, log_path)


def start_process(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A child process logging to a file."""
    with log_path.open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=log)


@dataclass
class Stack:
    """A scratch database, a broker and topics of one bench run, plus the service processes."""

    run: str
    database: str
    dsn: str
    database_url: str
    bootstrap: str
    broker_pid: int | None  # the broker of the run's own (its CPU counts); None on an existing broker
    settings: KafkaSettings
    guarantee: str = "at-least-once"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sample: float | None = None  # events carry traceparents sampled at this ratio; None: none
    traced: bool = False  # the services trace (OTEL_* set), at `sample`
    log_dir: Path = Path(".")

    @property
    def customer_prefix(self) -> str:
        """Prefix of this run's customer ids (and so of its Redis keys)."""
        return f"bench{self.run}"

    @property
    def topic(self) -> str:
        """The concrete customer-features topic."""
        return topic_name(self.settings, topics.CUSTOMER_FEATURES)

    def env(self, redis_url: str) -> dict[str, str]:
        """The STREAMSCORE_* environment of the services of this run."""
        return {
            **os.environ,
            "STREAMSCORE_KAFKA_BOOTSTRAP": self.bootstrap,
            "STREAMSCORE_KAFKA_PARTITIONS": str(self.settings.kafka_partitions),
            "STREAMSCORE_KAFKA_IDEMPOTENT": str(self.settings.kafka_idempotent).lower(),
            "STREAMSCORE_PROCESSING_GUARANTEE": self.guarantee,
            "STREAMSCORE_TOPIC_PREFIX": self.settings.topic_prefix,
            "STREAMSCORE_DATABASE_URL": self.database_url,
            "STREAMSCORE_REDIS_URL": redis_url,
            "STREAMSCORE_INSTANCE_ID": f"bench{self.run}",
            "STREAMSCORE_LOG_LEVEL": "WARNING",
            **({} if not self.traced else {
                "OTEL_TRACES_EXPORTER": "console",
                "STREAMSCORE_TRACES_FILE": str(self.log_dir / f"traces-{self.run}-{{service}}.jsonl"),
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": str(self.sample),
            }),
        }


@contextlib.asynccontextmanager
async def bench_stack(
    partitions: int, log_dir: Path, redis_url: str, keep_db: bool = False, broker_kind: str = "tansu",
    bootstrap: str = "", guarantee: str = "at-least-once", broker_pid: int | None = None,
) -> AsyncIterator[Stack]:
    """A migrated scratch database and a broker (Tansu, one Apache Kafka node, or an existing one at
    `bootstrap`) with fresh contract topics; torn down afterwards."""
    run = uuid.uuid4().hex[:8]
    database = f"ss_bench_{run}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    database_url = ADMIN_URL.set(database=database).render_as_string(hide_password=False)
    await asyncio.to_thread(upgrade_head, database_url)
    broker: TansuBroker | KafkaCluster | None = None
    if bootstrap:
        pass
    elif broker_kind == "kafka":  # data in a temp dir, removed at the end
        broker = await asyncio.to_thread(KafkaCluster(nodes=1).start)
    else:
        broker = TansuBroker(log_path=log_dir / f"tansu-{run}.log").start()
    settings = KafkaSettings(
        kafka_bootstrap=bootstrap if broker is None else broker.bootstrap, kafka_partitions=partitions,
        kafka_idempotent=bootstrap != "" or broker_kind == "kafka", topic_prefix=f"bench{run}.",
    )
    dsn = ADMIN_URL.set(drivername="postgresql", database=database).render_as_string(hide_password=False)
    node = broker.members[0] if isinstance(broker, KafkaCluster) else broker
    process = node.process if node is not None else None
    pid = process.pid if process is not None else broker_pid
    stack = Stack(run, database, dsn, database_url, settings.kafka_bootstrap, pid, settings, guarantee)
    try:
        await ensure_topics(settings)
        yield stack
    finally:
        stop_processes(stack.processes)
        if broker is not None:
            broker.stop()
        await drop_cached(redis_url, stack.customer_prefix)
        if not keep_db:
            admin = await asyncpg.connect(ADMIN_DSN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()


async def drop_cached(url: str, prefix: str) -> None:
    """Delete the run's prediction keys from Redis (a run leaves ~300 MB per million events otherwise)."""
    client = redis.from_url(url)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"predict:{prefix}-*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                await client.unlink(*batch)
                batch = []
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process, then kill the ones still running after 15 s."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def run_terminable(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, SIGTERM cancelling the run: each stack's teardown still stops the services and the broker
    (a plain SIGTERM ended the bench and left them running), then exit 143."""

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await main

    try:
        asyncio.run(guarded())
    except asyncio.CancelledError:
        raise SystemExit(128 + signal.SIGTERM) from None

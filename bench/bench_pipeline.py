"""Sustained end-to-end throughput: one `streamscore scorer` and one `streamscore sink` process.

Starts its own Tansu broker and a fresh Postgres database (local server, dropped afterwards), uses
the local Redis, waits until both services have stored a warm-up event, then produces N feature
events to customer-features.v1 and measures events/s from the first produce to the last row in
Postgres. Target: >= 25,000 events/s.

    .venv/bin/python bench/bench_pipeline.py --events 200000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
import redis.asyncio as redis
from aiokafka import AIOKafkaProducer

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from migrations.runner import upgrade_head
from schemas import topics
from schemas.features import FEATURE_RANGES
from scorer.handlers import send_keyed_batches
from streamscore.embedded import TansuBroker

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
STREAMSCORE = Path(sys.executable).with_name("streamscore")


def feature_payloads(count: int, seed: int = 0) -> list[tuple[bytes, bytes]]:
    """(key, FeatureEvent JSON) pairs with random in-range features and distinct customers."""
    rng = np.random.default_rng(seed)
    low = np.array([lo for lo, _ in FEATURE_RANGES])
    high = np.array([hi for _, hi in FEATURE_RANGES])
    matrix = rng.integers(low, high + 1, size=(count, len(FEATURE_RANGES))).tolist()
    now = "2026-01-01T00:00:00Z"
    payloads = []
    for i, features in enumerate(matrix):
        customer = f"bench-{i}"
        body = {
            "event_id": str(uuid.uuid4()),
            "customer_id": customer,
            "features": features,
            "occurred_at": now,
            "source": "event",
        }
        payloads.append((customer.encode(), orjson.dumps(body)))
    return payloads


async def produce_fast(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    """Keyed produce with the scorer's per-partition batch sender (acks=all); returns seconds taken."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    try:
        indexed = [(i, key, value) for i, (key, value) in enumerate(payloads)]
        await asyncio.gather(*(ack for ack, _ in await send_keyed_batches(producer, topic, indexed)))
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def stored_rows(dsn: str) -> int:
    """Rows in predictions."""
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM predictions"))
    finally:
        await connection.close()


def start_service(service: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`streamscore <service>` as a child process logging to a file."""
    with log_path.open("wb") as log:
        return subprocess.Popen([str(STREAMSCORE), service], env=env, stdout=log, stderr=log)


async def wait_rows(
    dsn: str, target: int, timeout_s: float, processes: list[subprocess.Popen[bytes]]
) -> float:
    """Poll until predictions holds `target` rows; returns the monotonic time it happened."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await stored_rows(dsn) >= target:
            return time.perf_counter()
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a service exited; see its log")
        await asyncio.sleep(0.1)
    raise TimeoutError(f"only {await stored_rows(dsn)} of {target} rows after {timeout_s:.0f}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def backend_pids(dsn: str, database: str) -> list[int]:
    """Postgres backends connected to the bench database (the sink's pool)."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", database
        )
        return [int(row["pid"]) for row in rows]
    finally:
        await connection.close()


async def service_stats(redis_url: str, prefix: str) -> dict[str, dict[Any, Any]]:
    """The stats hashes the services wrote (stats:scorer:* and stats:sink:*) for this run."""
    client = redis.from_url(redis_url, decode_responses=True)
    try:
        return {key: await client.hgetall(key) async for key in client.scan_iter(match=f"stats:*:{prefix}*")}
    finally:
        await client.aclose()


async def main(args: argparse.Namespace) -> None:
    """Run one bench."""
    run = uuid.uuid4().hex[:8]
    database = f"ss_bench_{run}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    dsn = f"postgresql://postgres@127.0.0.1:5432/{database}"
    database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    await asyncio.to_thread(upgrade_head, database_url)
    log_dir = Path(args.log_dir)
    broker = TansuBroker(log_path=log_dir / f"tansu-{run}.log").start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        settings = KafkaSettings(
            kafka_bootstrap=broker.bootstrap,
            kafka_partitions=args.partitions,
            kafka_idempotent=False,
            topic_prefix=f"bench{run}.",
        )
        await ensure_topics(settings)
        env = {
            **os.environ,
            "STREAMSCORE_KAFKA_BOOTSTRAP": broker.bootstrap,
            "STREAMSCORE_KAFKA_PARTITIONS": str(args.partitions),
            "STREAMSCORE_KAFKA_IDEMPOTENT": "false",
            "STREAMSCORE_TOPIC_PREFIX": settings.topic_prefix,
            "STREAMSCORE_DATABASE_URL": database_url,
            "STREAMSCORE_REDIS_URL": args.redis_url,
            "STREAMSCORE_INSTANCE_ID": f"bench{run}",
            "STREAMSCORE_LOG_LEVEL": "WARNING",
        }
        for service in ("scorer", "sink"):
            processes.append(start_service(service, env, log_dir / f"{service}-{run}.log"))
        topic = topic_name(settings, topics.CUSTOMER_FEATURES)

        warmup = feature_payloads(args.warmup, seed=1)
        await produce_fast(broker.bootstrap, topic, warmup)
        await wait_rows(dsn, len(warmup), 120, processes)
        print(f"services ready (warm-up of {len(warmup)} events stored)")

        payloads = feature_payloads(args.events, seed=2)
        pids = {"scorer": processes[0].pid, "sink": processes[1].pid}
        if broker.process is not None:
            pids["tansu"] = broker.process.pid
        pg_pids = await backend_pids(dsn, database)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        pg_before = sum(cpu_seconds(pid) for pid in pg_pids)
        started = time.perf_counter()
        produce_s = await produce_fast(broker.bootstrap, topic, payloads)
        finished = await wait_rows(dsn, len(warmup) + len(payloads), args.timeout, processes)
        elapsed = finished - started
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        cpu["postgres"] = sum(cpu_seconds(pid) for pid in pg_pids) - pg_before
        stats = await service_stats(args.redis_url, f"bench{run}")

        print(f"events:            {len(payloads)}")
        print(f"produce:           {produce_s:.2f} s ({len(payloads) / produce_s:,.0f} events/s)")
        print(f"end to end:        {elapsed:.2f} s ({len(payloads) / elapsed:,.0f} events/s, target 25,000)")
        print(
            "cpu per event:     "
            + "  ".join(f"{name}={seconds / len(payloads) * 1e6:.1f}us" for name, seconds in cpu.items())
            + f"  (loadavg {os.getloadavg()[0]:.1f})"
        )
        for key, fields in sorted(stats.items()):
            batches = int(fields.get("batches", "0")) or 1
            print(
                f"{key.split(':')[1]:<7} batches={fields.get('batches')} "
                f"avg_batch={int(fields.get('events_in', '0')) / batches:.0f} "
                f"p50_ms={fields.get('p50_ms')} p99_ms={fields.get('p99_ms')} dlq={fields.get('dlq')}"
            )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        broker.stop()
        if not args.keep_db:
            admin = await asyncpg.connect(ADMIN_DSN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=600.0, help="Give up after this many seconds.")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--log-dir", default="/tmp/streamscore-bench")
    parser.add_argument("--keep-db", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    options = parse_args()
    Path(options.log_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(main(options))

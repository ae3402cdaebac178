"""What the pipeline benchmarks read off a run: rows stored, CPU and memory of each process, pids, stats."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as redis


async def stored_rows(dsn: str) -> int:
    """Rows in predictions."""
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM predictions"))
    finally:
        await connection.close()


class RowCounter:
    """Rows in predictions, counted by id ranges: a full count(*) scans the whole table every poll.

    The count grew with the table (up to 16 % of a core by the end of a 300 k run), loading the machine
    the benchmark measures. A writer committing a lower id after a higher one was seen is caught by the
    full count that confirms the target, and by a full recount whenever progress stalls.
    """

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.rows = 0
        self.last_id = 0

    async def recount(self) -> int:
        """Full count (exact whatever the commit order)."""
        row = await self.connection.fetchrow("SELECT count(*), coalesce(max(id), 0) FROM predictions")
        self.rows, self.last_id = int(row[0]), int(row[1])
        return self.rows

    async def count(self) -> int:
        """Rows seen so far: the earlier count plus the rows above the greatest id seen."""
        row = await self.connection.fetchrow(
            "SELECT count(*), max(id) FROM predictions WHERE id > $1", self.last_id
        )
        if row[0]:
            self.rows += int(row[0])
            self.last_id = int(row[1])
        return self.rows


async def wait_rows(
    dsn: str,
    target: int,
    timeout_s: float,
    processes: list[subprocess.Popen[bytes]],
    on_poll: Callable[[int], None] | None = None,
) -> float:
    """Poll (one connection, every 0.1 s) until predictions holds `target` rows; the perf_counter then."""
    deadline = time.monotonic() + timeout_s
    connection = await asyncpg.connect(dsn)  # one backend: forking one per poll would cost Postgres CPU
    counter = RowCounter(connection)
    try:
        rows = await counter.recount()
        stalled_since = time.monotonic()
        while time.monotonic() < deadline:
            seen, rows = rows, await counter.count()
            if on_poll is not None:
                on_poll(rows)
            if rows >= target and await counter.recount() >= target:
                return time.perf_counter()
            if rows > seen:
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since > 2.0:
                rows = await counter.recount()
                stalled_since = time.monotonic()
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a service exited; see its log")
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    raise TimeoutError(f"only {await stored_rows(dsn)} of {target} rows after {timeout_s:.0f}s")


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), "VmRSS: 0 kB")
    return int(line.split()[1]) / 1024


@dataclass
class MemoryTrace:
    """RSS of each service each time another tenth of the run's events was stored."""

    pids: dict[str, int]
    start: int
    events: int
    samples: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    def poll(self, rows: int) -> None:
        """Sample at every crossed tenth of the run."""
        done = rows - self.start
        while len(self.samples) < 10 and done >= self.events * (len(self.samples) + 1) // 10:
            self.samples.append((done, {name: rss_mb(pid) for name, pid in self.pids.items()}))

    def report(self) -> str:
        """Per service: RSS at each tenth, its growth (second half's mean over the first's) and its swing.

        Growth is the trend a leak would show. A single sample against the largest of the nine after it
        measures how far RSS swings with the batches in flight (a sink's parsed batches, asyncpg's and
        Redis's buffers), which it also prints: from the first tenth to the largest later sample.
        """
        lines = []
        for name in self.pids:
            series = [sample[name] for _, sample in self.samples]
            if len(series) < 4:
                continue
            half = len(series) // 2
            first, second = sum(series[:half]) / half, sum(series[half:]) / (len(series) - half)
            growth = (second - first) / first * 100
            swing = (max(series[1:]) - series[0]) / series[0] * 100
            lines.append(f"rss {name:<6} MB at each tenth: {' '.join(f'{v:.0f}' for v in series)}  "
                         f"growth {growth:+.1f}% (second half's mean over the first's; target < 10%), "
                         f"first tenth to the largest later {swing:+.1f}%")
        return "\n".join(lines)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_pid(url: str) -> int:
    """The Redis server's pid (its CPU is part of every design's cost)."""
    client = redis.from_url(url)
    try:
        return int((await client.info("server"))["process_id"])
    finally:
        await client.aclose()


async def backend_pids(dsn: str, database: str) -> list[int]:
    """Postgres backends connected to the bench database (the sink's pool), but for this query's own."""
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


async def table_bytes_per_row(dsn: str) -> float:
    """Bytes of the predictions table with its indexes and TOAST per stored row."""
    connection = await asyncpg.connect(dsn)
    try:
        size, rows = await connection.fetchrow(
            "SELECT pg_total_relation_size('predictions'), (SELECT count(*) FROM predictions)")
    finally:
        await connection.close()
    return float(size) / max(int(rows), 1)

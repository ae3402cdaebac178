"""Sync-path benchmark: POST /api/v1/predict/single from N concurrent keep-alive clients.

Starts what it needs (Tansu broker unless STREAMSCORE_KAFKA_BOOTSTRAP is set, a scratch database on the local
Postgres, the local Redis), runs the API as `streamscore api` with auth ON (an API key per request), and
measures p50/p95/p99 latency and throughput with dynamic batching on and off. `--workers 2` runs
`streamscore api --workers 2` (processes sharing the port); API CPU then sums the supervisor and its workers.

    .venv/bin/python bench/bench_sync.py --duration 15 --concurrency 50 --mode both

Closed loop by default; `--rate 2000` offers a fixed 2,000 req/s over the same connections instead
(open loop, latency from each request's scheduled send time). By Little's law a closed loop of 50
clients at 2,000 req/s averages 25 ms, so the p99 target is read at a fixed offered rate.

Targets: p99 <= 10 ms and >= 2,000 req/s. The client is a minimal HTTP/1.1 client on uvloop so that it
costs as little CPU as possible on the shared cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.data import resolve_data_path  # noqa: E402
from streamscore.dev import admin_key  # noqa: E402
from streamscore.embedded import TansuBroker, free_port, spawn, stop_process  # noqa: E402

CLI = "from streamscore.cli import main; main()"
DATA = resolve_data_path().parent
ADMIN_URL = os.environ.get("STREAMSCORE_BENCH_ADMIN_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


@dataclass
class Stack:
    """Engines and settings shared by the service processes of one benchmark run."""

    env: dict[str, str]
    api_key: str
    logs: Path
    processes: list[Any] = field(default_factory=list)

    def start(self, service: str, *args: str, extra_env: dict[str, str] | None = None) -> Any:
        """Run `streamscore <service>` with the stack's environment; logs go to the run's log directory."""
        log = (self.logs / f"{service}-{len(self.processes)}.log").open("ab")
        env = {**self.env, **(extra_env or {})}
        process = spawn([sys.executable, "-c", CLI, service, *args], log=log, env=env)
        self.processes.append(process)
        return process

    def stop(self, process: Any) -> None:
        """Stop one service process (its whole process group)."""
        stop_process(process)
        self.processes.remove(process)


async def _create_database(admin_url: str) -> str:
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"ss_bench_{uuid.uuid4().hex[:10]}"
    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def _drop_database(admin_url: str, url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@contextlib.contextmanager
def stack() -> Iterator[Stack]:
    """A broker, a migrated scratch database and an admin API key; everything is removed afterwards."""
    from migrations.runner import upgrade_head

    broker = None
    bootstrap = os.environ.get("STREAMSCORE_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = TansuBroker().start()
        bootstrap = broker.bootstrap
    database_url = asyncio.run(_create_database(ADMIN_URL))
    logs = Path(tempfile.mkdtemp(prefix="streamscore-bench-"))
    try:
        upgrade_head(database_url)
        # Tansu lacks InitProducerId, so the idempotent producer is off against it.
        idempotent = "false" if broker else os.environ.get("STREAMSCORE_KAFKA_IDEMPOTENT", "true")
        env = {
            **os.environ,
            "STREAMSCORE_KAFKA_BOOTSTRAP": bootstrap,
            "STREAMSCORE_KAFKA_IDEMPOTENT": idempotent,
            "STREAMSCORE_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:6]}.",
            "STREAMSCORE_DATABASE_URL": database_url,
            "STREAMSCORE_REDIS_URL": os.environ.get("STREAMSCORE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
            "STREAMSCORE_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
            "STREAMSCORE_RATE_LIMIT": "100000000",  # auth stays on; the limiter must not cap the benchmark
        }
        running = Stack(env=env, api_key=asyncio.run(admin_key(database_url)), logs=logs)
        try:
            yield running
        finally:
            for process in list(running.processes):
                running.stop(process)
    finally:
        asyncio.run(_drop_database(ADMIN_URL, database_url))
        if broker is not None:
            broker.stop()
        print(f"service logs: {logs}", file=sys.stderr)


def wait_healthy(port: int, timeout_s: float = 90.0) -> None:
    """Block until GET /ready answers 200 (the model is loaded and every dependency answers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/ready",
                                                                  timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"the API on port {port} did not become ready in {timeout_s:.0f}s")


def wait_workers(pid: int, port: int, workers: int, timeout_s: float = 90.0) -> None:
    """Block until every worker listens (/ready answers as soon as the first one does)."""
    import psutil

    if workers == 1:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listening = [child for child in psutil.Process(pid).children()
                     if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                            for c in child.net_connections("tcp"))]
        if len(listening) == workers:
            return
        time.sleep(0.25)
    raise TimeoutError(f"not all {workers} API workers listened on port {port} in {timeout_s:.0f}s")


def dataset_rows() -> list[list[int]]:
    """The CoIL rows as lists of 86 ints."""
    with (DATA / "train.csv").open(encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [[int(v) for v in row] for row in reader]


def build_requests(api_key: str, path: str, count: int) -> list[bytes]:
    """Raw HTTP/1.1 keep-alive requests, one per dataset row (cycled)."""
    rows = dataset_rows()
    requests = []
    for i in range(count):
        body = json.dumps({"customer_id": f"bench-{i}", "features": rows[i % len(rows)]}).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {api_key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        requests.append(head + body)
    return requests


async def _client(port: int, requests: list[bytes], offset: int, stop_at: float, latencies: list[float],
                  statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            i += 1
    finally:
        writer.close()


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(head[9:12])


async def _open_loop_client(port: int, requests: list[bytes], schedule: Iterator[int], started: float,
                            rate: float, stop_at: float, latencies: list[float],
                            statuses: dict[int, int]) -> None:
    """Take the next scheduled request whenever this connection is free; latency from the scheduled time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in schedule:
            due = started + i / rate
            if due >= stop_at:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status = await _roundtrip(reader, writer, requests[i % len(requests)])
            # From the scheduled send time: a request that waited for a free connection counts its wait.
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def load(port: int, requests: list[bytes], concurrency: int, duration_s: float,
               rate: float | None = None) -> dict[str, Any]:
    """Drive the API with `concurrency` keep-alive clients for `duration_s`; latency percentiles and rate.

    Closed loop by default (each client sends its next request when the last one is answered). With
    `rate`, open loop: requests are scheduled at `rate` per second and spread over the connections,
    and latency is measured from each request's scheduled time (no coordinated omission).
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    stop_at = started + duration_s
    if rate:
        schedule = itertools.count()
        await asyncio.gather(*(
            _open_loop_client(port, requests, schedule, started, rate, stop_at, latencies, statuses)
            for _ in range(concurrency)
        ))
    else:
        await asyncio.gather(*(
            _client(port, requests, n * 997, stop_at, latencies, statuses) for n in range(concurrency)
        ))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(quantiles[49] * 1000, 2),
        "p95_ms": round(quantiles[94] * 1000, 2),
        "p99_ms": round(quantiles[98] * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
        "statuses": statuses,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU in seconds of a process (all its threads) and its live descendants (API workers)."""
    import psutil

    parent = psutil.Process(pid)
    times = [process.cpu_times() for process in [parent, *parent.children(recursive=True)]]
    return sum(t.user + t.system for t in times)


def mean_batch_size(port: int, api_key: str) -> float | None:
    """Rows per engine call on the sync path so far, from /metrics (None if not batching; of one worker)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"X-API-Key": api_key})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("streamscore_api_dynamic_batch_size_")}
    count = values.get("streamscore_api_dynamic_batch_size_count", 0.0)
    return round(values["streamscore_api_dynamic_batch_size_sum"] / count, 1) if count else None


def run_mode(running: Stack, dynamic: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Start one API process with dynamic batching on or off, warm it up, then measure."""
    import uvloop

    port = free_port()
    extra = {"STREAMSCORE_DYNAMIC_BATCHING": str(dynamic).lower(),
             "STREAMSCORE_DYNAMIC_BATCH_WINDOW_MS": str(args.window_ms),
             "STREAMSCORE_DYNAMIC_BATCH_MAX": str(args.batch_max)}
    process = running.start("api", "--port", str(port), "--workers", str(args.workers), extra_env=extra)
    try:
        wait_healthy(port)
        wait_workers(process.pid, port, args.workers)
        requests = build_requests(running.api_key, "/api/v1/predict/single", 5000)
        uvloop.run(load(port, requests, args.concurrency, args.warmup, args.rate))
        cpu_before = cpu_seconds(process.pid)
        result = uvloop.run(load(port, requests, args.concurrency, args.duration, args.rate))
        # CPU per request is the figure that survives a busy machine; req/s and latency do not.
        spent = cpu_seconds(process.pid) - cpu_before
        result["api_cpu_us_per_req"] = round(spent / result["requests"] * 1e6)
        result["mean_engine_batch"] = mean_batch_size(port, running.api_key)
    finally:
        running.stop(process)
    return {"dynamic_batching": dynamic, "workers": args.workers, "concurrency": args.concurrency,
            "offered_rate": args.rate, **result}


def main() -> None:
    """Parse arguments, run the requested modes, print one JSON line per mode and a summary table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="Measured seconds per mode.")
    parser.add_argument("--warmup", type=float, default=3.0, help="Unmeasured seconds before each run.")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--mode", choices=("on", "off", "both"), default="both", help="Dynamic batching.")
    parser.add_argument("--window-ms", type=float, default=1.0)
    parser.add_argument("--batch-max", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="API processes (streamscore api --workers).")
    parser.add_argument("--rate", type=float, default=None,
                        help="Open loop: offered req/s spread over the connections (default: closed loop).")
    args = parser.parse_args()
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.mode]
    with stack() as running:
        results = [run_mode(running, dynamic, args) for dynamic in modes]
    for result in results:
        print(json.dumps(result))
    print(f"\n{'dynamic batching':<18}{'workers':>8}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'API µs/req':>12}  statuses")
    for r in results:
        print(f"{'on' if r['dynamic_batching'] else 'off':<18}{r['workers']:>8}{r['req_per_s']:>10}"
              f"{r['p50_ms']:>9}{r['p95_ms']:>9}{r['p99_ms']:>9}{r['api_cpu_us_per_req']:>12}"
              f"  {r['statuses']}")


if __name__ == "__main__":
    main()

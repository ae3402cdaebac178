"""Sustained end-to-end throughput: one `streamscore scorer` and one `streamscore sink` process.

Starts its own broker (Tansu; `--broker kafka`: one Apache Kafka node from Maven jars, idempotent
producers on) and a fresh Postgres database (on the local server, or the one
STREAMSCORE_BENCH_ADMIN_URL names; dropped afterwards), uses
the local Redis, waits until both services have stored a warm-up event, then produces N feature
events to customer-features.v1 and measures events/s from the first produce to the last row in
Postgres. Target: >= 25,000 events/s. With --rate, then sends events at that steady rate and reports the
latency from send to `predictions.stored_at` (p99 target <= 300 ms at 2,000 events/s).

--bootstrap runs on an existing broker (Apache Kafka) instead of a Tansu of its own; --guarantee both runs
the scorer at least once and then exactly once (transactions: Apache Kafka only), each on fresh topics and a
fresh database, and prints the two side by side. --tracing both runs it without tracing and then with
tracing on (infra/tracing.py: spans to a JSON-lines file, head sampling at --sample, every event carrying a
traceparent sampled at that rate, as the API would send it), and prints the two side by side; `headers` in
its comma list runs a leg whose events carry those traceparents while the services do not trace (what the
header alone costs the broker and the consumers).

    .venv/bin/python bench/bench_pipeline.py --events 200000
    .venv/bin/python bench/bench_pipeline.py --events 0 --rate 2000 --seconds 20
    .venv/bin/python bench/bench_pipeline.py --bootstrap 127.0.0.1:9092 --guarantee both --rate 2000
    .venv/bin/python bench/with_engines.py bench/bench_pipeline.py --events 20000 --tracing both
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import numpy as np
import orjson
from aiokafka import AIOKafkaProducer
from pipeline_probes import (
    MemoryTrace,
    backend_pids,
    cpu_seconds,
    redis_pid,
    service_stats,
    table_bytes_per_row,
    wait_rows,
)
from pipeline_stack import Stack, bench_stack, run_terminable, start_service

from infra.kafka import producer_options
from schemas.features import FEATURE_RANGES
from scorer.handlers import send_keyed_batches


def feature_payloads(count: int, seed: int = 0, prefix: str = "bench") -> list[tuple[bytes, bytes]]:
    """(key, FeatureEvent JSON) pairs with random in-range features and customers new to this run.

    Customers are `{prefix}-{seed}-{i}`: every phase of a run scores new customers in Postgres and Redis
    alike, whatever earlier runs left in Redis (an update costs Redis another figure than a new key).
    """
    rng = np.random.default_rng(seed)
    low = np.array([lo for lo, _ in FEATURE_RANGES])
    high = np.array([hi for _, hi in FEATURE_RANGES])
    matrix = rng.integers(low, high + 1, size=(count, len(FEATURE_RANGES))).tolist()
    now = "2026-01-01T00:00:00Z"
    payloads = []
    for i, features in enumerate(matrix):
        customer = f"{prefix}-{seed}-{i}"
        body = {
            "event_id": str(uuid.uuid4()),
            "customer_id": customer,
            "features": features,
            "occurred_at": now,
            "source": "event",
        }
        payloads.append((customer.encode(), orjson.dumps(body)))
    return payloads


def trace_headers(count: int, sample: float | None, seed: int = 0) -> list[list[tuple[str, bytes]]] | None:
    """Per event a traceparent of its own request, sampled at `sample` (None: no tracing, no headers)."""
    if sample is None:
        return None
    rng = np.random.default_rng(seed)
    sampled = rng.random(count) < sample
    flags = ["01" if hit else "00" for hit in sampled]
    return [[("traceparent", f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-{flag}".encode())]
            for flag in flags]


async def produce_fast(
    stack: Stack, payloads: list[tuple[bytes, bytes]], headers: list[list[tuple[str, bytes]]] | None = None,
) -> float:
    """Keyed produce to the features topic with the scorer's per-partition batch sender, configured as the
    services' producers are (infra/kafka.producer_options; not aiokafka's 16 KB batches: docs/performance.md,
    "The load generator"); returns seconds taken."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, **producer_options(stack.settings))
    await producer.start()
    started = time.perf_counter()
    try:
        indexed = [(i, key, value) for i, (key, value) in enumerate(payloads)]
        sent = await send_keyed_batches(producer, stack.topic, indexed, headers)
        await asyncio.gather(*(ack for ack, _ in sent))
    finally:
        await producer.stop()
    return time.perf_counter() - started


@dataclass
class Throughput:
    """One sustained run: events, seconds and CPU seconds per process."""

    events: int
    produce_s: float
    elapsed_s: float
    cpu_s: dict[str, float]
    memory: MemoryTrace

    def report(self, label: str) -> str:
        """Human lines."""
        per_event = "  ".join(f"{name}={s / self.events * 1e6:.1f}us" for name, s in self.cpu_s.items())
        return (
            f"{label}: {self.events} events in {self.elapsed_s:.2f} s = {self.events / self.elapsed_s:,.0f} "
            f"events/s (produce {self.events / self.produce_s:,.0f}/s)\n"
            f"{label}: cpu per event {per_event}  (loadavg {os.getloadavg()[0]:.1f})\n"
            f"{self.memory.report()}"
        )


async def measure_throughput(stack: Stack, pids: dict[str, int], events: int, already: int) -> Throughput:
    """Produce `events` at full speed; time from the first produce to the last row in Postgres."""
    payloads = feature_payloads(events, seed=2, prefix=stack.customer_prefix)
    headers = trace_headers(events, stack.sample, seed=2)
    if stack.broker_pid is not None:
        pids = {**pids, "broker": stack.broker_pid}
    pg_pids = await backend_pids(stack.dsn, stack.database)
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    pg_before = sum(cpu_seconds(pid) for pid in pg_pids)
    started = time.perf_counter()
    memory = MemoryTrace({name: pids[name] for name in ("scorer", "sink")}, already, events)
    produce = asyncio.create_task(produce_fast(stack, payloads, headers))
    finished = await wait_rows(stack.dsn, already + events, 1800, stack.processes, memory.poll)
    produce_s = await produce
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    # A backend the services opened during the run (a pool's second connection) counts from its start.
    opened = set(await backend_pids(stack.dsn, stack.database)) - set(pg_pids)
    cpu["postgres"] = sum(cpu_seconds(pid) for pid in [*pg_pids, *opened]) - pg_before
    return Throughput(events, produce_s, finished - started, cpu, memory)


async def measure_latency(
    stack: Stack, rate: int, seconds: float, already: int
) -> tuple[float, float, float]:
    """Produce at a steady `rate` events/s for `seconds`; (p50, p99, max) ms from send to `stored_at`."""
    total = int(rate * seconds)
    payloads = feature_payloads(total, seed=3, prefix=stack.customer_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    started = time.perf_counter()
    try:
        pending = []
        for i in range(0, total, per_tick):
            await asyncio.sleep(max(0.0, started + (i / rate) - time.perf_counter()))
            chunk = payloads[i : i + per_tick]
            now = time.time()
            for _, value in chunk:
                sent[orjson.loads(value)["event_id"]] = now
            indexed = [(i + j, key, value) for j, (key, value) in enumerate(chunk)]
            pending += [ack for ack, _ in await send_keyed_batches(producer, stack.topic, indexed)]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    await wait_rows(stack.dsn, already + total, 120, stack.processes)
    connection = await asyncpg.connect(stack.dsn)
    try:
        rows = await connection.fetch(
            "SELECT event_id::text AS id, extract(epoch FROM stored_at) AS at FROM predictions "
            "WHERE event_id = ANY($1::uuid[])", list(sent)
        )
    finally:
        await connection.close()
    latency = np.array([(float(r["at"]) - sent[r["id"]]) * 1000.0 for r in rows])
    p50, p99 = np.percentile(latency, [50, 99])
    return float(p50), float(p99), float(latency.max())


async def main(args: argparse.Namespace) -> None:
    """Run the bench once per processing guarantee asked for, and print each run's figures side by side."""
    guarantees = ["at-least-once", "exactly-once"] if args.guarantee == "both" else [args.guarantee]
    tracings = ["off", "on"] if args.tracing == "both" else args.tracing.split(",")
    logs = ["off", "on"] if args.feature_log == "both" else [args.feature_log]
    summaries = []
    for guarantee in guarantees:
        for feature_log in logs:  # STREAMSCORE_FEATURE_LOG: the scorer carries features, the sink stores them
            os.environ["STREAMSCORE_FEATURE_LOG"] = "true" if feature_log == "on" else "false"
            for tracing in tracings:
                summaries.append(f"feature log {feature_log:<3} " + await bench_run(args, guarantee, tracing))
    if len(summaries) > 1:
        print("\nside by side:")
        for summary in summaries:
            print(summary)


async def bench_run(args: argparse.Namespace, guarantee: str, tracing: str = "off") -> str:
    """One bench: throughput, then (with --rate) latency at a steady rate; a one-line summary."""
    log_dir = Path(args.log_dir)
    summary = f"{guarantee:<14} tracing {tracing + (f' ({args.sample:g})' if tracing != 'off' else ''):<12}"
    async with bench_stack(args.partitions, log_dir, args.redis_url, args.keep_db, args.broker,
                           args.bootstrap, guarantee, args.broker_pid) as stack:
        stack.sample = args.sample if tracing != "off" else None
        stack.traced = tracing == "on"
        stack.log_dir = log_dir
        print(f"--- {guarantee}, tracing {tracing}, on "
              f"{'Kafka at ' + args.bootstrap if args.bootstrap else args.broker}")
        env = stack.env(args.redis_url)
        for service in ("scorer", "sink"):
            stack.processes.append(start_service(service, env, log_dir / f"{service}-{stack.run}.log"))
        warmup = feature_payloads(args.warmup, seed=1, prefix=stack.customer_prefix)
        await produce_fast(stack, warmup, trace_headers(len(warmup), stack.sample))
        await wait_rows(stack.dsn, len(warmup), 120, stack.processes)
        print(f"services ready (warm-up of {len(warmup)} events stored)")
        pids = {"scorer": stack.processes[0].pid, "sink": stack.processes[1].pid,
                "redis": await redis_pid(args.redis_url)}
        stored = len(warmup)
        if args.events:
            result = await measure_throughput(stack, pids, args.events, stored)
            stored += args.events
            print(result.report("streamscore"))
            cpu = sum(result.cpu_s.values()) / result.events * 1e6
            broker = result.cpu_s.get("broker")
            broker_text = f", broker {broker / result.events * 1e6:.1f} us" if broker is not None else ""
            summary += (f" throughput {result.events / result.elapsed_s:,.0f} events/s, cpu/event "
                        f"scorer {result.cpu_s['scorer'] / result.events * 1e6:.1f} us{broker_text}, "
                        f"all {cpu:.1f} us;")
            summary += f" predictions {await table_bytes_per_row(stack.dsn):.0f} B/row;"
            stats = await service_stats(args.redis_url, f"bench{stack.run}")
            for key, fields in sorted(stats.items()):
                batches = int(fields.get("batches", "0")) or 1
                print(
                    f"{key.split(':')[1]:<7} batches={fields.get('batches')} "
                    f"avg_batch={int(fields.get('events_in', '0')) / batches:.0f} "
                    f"p50_ms={fields.get('p50_ms')} p99_ms={fields.get('p99_ms')} dlq={fields.get('dlq')}"
                )
        if args.rate:
            p50, p99, worst = await measure_latency(stack, args.rate, args.seconds, stored)
            print(f"streamscore: latency at {args.rate}/s sent->stored p50 {p50:.0f} ms p99 {p99:.0f} ms "
                  f"max {worst:.0f} ms (target p99 <= 300)")
            summary += f" at {args.rate}/s sent->stored p50 {p50:.0f} ms p99 {p99:.0f} ms max {worst:.0f} ms"
    return summary


def tracing_order(text: str) -> str:
    """--tracing: both, or a comma list of off/on/headers."""
    if text != "both" and not set(text.split(",")) <= {"off", "on", "headers"}:
        raise argparse.ArgumentTypeError("off, on, both, or a comma list of off/on/headers")
    return text


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=600.0, help="Give up after this many seconds.")
    parser.add_argument("--redis-url", default=os.environ.get("STREAMSCORE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--log-dir", default="/tmp/streamscore-bench")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu",
                        help="kafka: one Apache Kafka node from Maven jars (needs java and mvn).")
    parser.add_argument("--rate", type=int, default=0, help="Then measure latency at this steady rate.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Length of the latency run.")
    parser.add_argument("--bootstrap", default="", help="An existing broker (Apache Kafka), not a Tansu.")
    parser.add_argument("--broker-pid", type=int, default=None,
                        help="With --bootstrap: the broker's pid, to count its CPU per event too.")
    parser.add_argument("--guarantee", choices=["at-least-once", "exactly-once", "both"],
                        default="at-least-once", help="The scorer's STREAMSCORE_PROCESSING_GUARANTEE.")
    parser.add_argument("--tracing", default="off", type=tracing_order,
                        help="off, on (OTEL_* tracing in both services, events with sampled traceparents), "
                             "both (off then on), or a comma list in the order to run (on,off; off,off); "
                             "headers: the events carry on's traceparents, the services do not trace")
    parser.add_argument("--sample", type=float, default=0.01,
                        help="Sampled share of events' traceparents (on, headers), the services' ratio (on).")
    parser.add_argument("--feature-log", choices=["on", "off", "both"], default="on",
                        help="The scorer's STREAMSCORE_FEATURE_LOG; both: off, then on, side by side.")
    return parser.parse_args()


if __name__ == "__main__":
    options = parse_args()
    Path(options.log_dir).mkdir(parents=True, exist_ok=True)
    run_terminable(main(options))

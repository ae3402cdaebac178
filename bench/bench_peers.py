"""This project against a Bytewax 0.21 dataflow doing the same work, in one invocation.

Both designs get a fresh broker (Tansu, or with `--broker kafka` one Apache Kafka node) and scratch
database (this project's migrations), the same Redis, the same InferenceEngine and the same events: first
a warm-up, then N events as fast as they can be produced (events/s and CPU µs per event per process), then
a steady rate (latency sent -> stored). With
`--rounds N` the designs alternate N times and the ratio is given per round and as the median: this host's
speed drifts by a quarter within minutes, so one pass of each can mislead either way.
Needs the `bench` extra (`pip install 'bytewax[kafka]==0.21.*'`).

    .venv/bin/python bench/bench_peers.py --events 150000 --rate 2000 --seconds 15 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import Throughput, feature_payloads, measure_latency, measure_throughput, produce_fast
from pipeline_probes import redis_pid, wait_rows
from pipeline_stack import STREAMSCORE, bench_stack, run_terminable, start_process

ROOT = Path(__file__).resolve().parent.parent
DESIGNS: dict[str, list[list[str]]] = {
    "streamscore": [[str(STREAMSCORE), "scorer"], [str(STREAMSCORE), "sink"]],
    "bytewax": [
        [sys.executable, "-m", "bytewax.run", str(ROOT / "bench" / "peer_bytewax.py:scorer_flow")],
        [sys.executable, "-m", "bytewax.run", str(ROOT / "bench" / "peer_bytewax.py:sink_flow")],
    ],
}


async def run_design(name: str, args: argparse.Namespace) -> tuple[Throughput, tuple[float, float, float]]:
    """One design on its own broker and database: throughput, then latency at the steady rate."""
    log_dir = Path(args.log_dir)
    async with bench_stack(args.partitions, log_dir, args.redis_url, broker_kind=args.broker) as stack:
        env = {**stack.env(args.redis_url), "PYTHONPATH": str(ROOT)}
        for role, command in zip(("scorer", "sink"), DESIGNS[name], strict=True):
            stack.processes.append(start_process(command, env, log_dir / f"{name}-{role}-{stack.run}.log"))
        warmup = feature_payloads(args.warmup, seed=1, prefix=stack.customer_prefix)
        await produce_fast(stack, warmup)
        await wait_rows(stack.dsn, len(warmup), 180, stack.processes)
        pids = {"scorer": stack.processes[0].pid, "sink": stack.processes[1].pid,
                "redis": await redis_pid(args.redis_url)}
        result = await measure_throughput(stack, pids, args.events, len(warmup))
        print(result.report(name), flush=True)
        latency = await measure_latency(stack, args.rate, args.seconds, len(warmup) + args.events)
        print(f"{name}: latency at {args.rate}/s p50 {latency[0]:.0f} ms p99 {latency[1]:.0f} ms "
              f"max {latency[2]:.0f} ms", flush=True)
        return result, latency


async def main(args: argparse.Namespace) -> None:
    """Every design in turn, `--rounds` times (alternated: the host's speed drifts), then the comparison."""
    rounds: list[dict[str, tuple[Throughput, tuple[float, float, float]]]] = []
    for _ in range(args.rounds):
        rounds.append({name: await run_design(name, args) for name in args.designs})
    print("\n| round | design | events/s | CPU µs/event (scorer / sink / broker / Postgres / Redis) "
          f"| p50 / p99 ms at {args.rate}/s |\n|---|---|---|---|---|")
    for number, results in enumerate(rounds, 1):
        for name, (run, (p50, p99, _)) in results.items():
            cpu = " / ".join(f"{run.cpu_s.get(k, 0.0) / run.events * 1e6:.0f}"
                             for k in ("scorer", "sink", "broker", "postgres", "redis"))
            print(f"| {number} | {name} | {rate(run):,.0f} | {cpu} | {p50:.0f} / {p99:.0f} |")
    if {"streamscore", "bytewax"} <= set(args.designs):
        ratios = [rate(results["streamscore"][0]) / rate(results["bytewax"][0]) for results in rounds]
        print(f"\nratio streamscore / bytewax per round: {', '.join(f'{r:.2f}x' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f}x (target >= 2x)")


def rate(run: Throughput) -> float:
    """Events per second of one throughput run."""
    return run.events / run.elapsed_s


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--rounds", type=int, default=1, help="Run every design this many times, alternated.")
    parser.add_argument("--redis-url", default=os.environ.get("STREAMSCORE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/7"))
    parser.add_argument("--log-dir", default="/tmp/streamscore-bench")
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu",
                        help="kafka: one Apache Kafka node from Maven jars (needs java and mvn).")
    return parser.parse_args()


if __name__ == "__main__":
    options = parse_args()
    Path(options.log_dir).mkdir(parents=True, exist_ok=True)
    run_terminable(main(options))

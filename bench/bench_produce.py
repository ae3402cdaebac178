"""What producing the feature events costs the load generator and one Apache Kafka node, per event.

bench/bench_pipeline.py produces its events while the pipeline runs, on the same cores, so what its own
producer and the broker spend on them is taken from the services. This produces N events (the benchmark's
payloads, keyed, with the scorer's per-partition batch sender) to fresh topics, nothing else running, and
reports the CPU µs per event of this process and of the broker, and the produce requests sent: with
aiokafka's default producer options (16 KB batches) and with the services' (infra/kafka.producer_options:
256 KB batches, idempotence), each without and with a traceparent header on every event (sampled at 1 %).
Legs alternate; medians over the repeats.

    .venv/bin/python bench/bench_produce.py --events 200000 --repeat 4
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from infra.kafka import ensure_topics, producer_options, topic_name
from infra.settings import KafkaSettings
from schemas import topics
from scorer.handlers import send_keyed_batches
from streamscore.kafka_server import KafkaCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import feature_payloads, trace_headers
from pipeline_probes import cpu_seconds
from pipeline_stack import run_terminable

CONFIGS = ("aiokafka defaults", "services' options")


async def leg(
    cluster: KafkaCluster, config: str, headers: list[Any] | None, payloads: list[tuple[bytes, bytes]],
    prefix: str,
) -> tuple[float, float, int]:
    """(producer µs, broker µs) CPU per event and produce requests, for one pass over `payloads`."""
    settings = KafkaSettings(kafka_bootstrap=cluster.bootstrap, kafka_partitions=6, kafka_idempotent=True,
                             topic_prefix=prefix)
    await ensure_topics(settings, (topics.CUSTOMER_FEATURES,))
    options = producer_options(settings) if config == CONFIGS[1] else {"acks": "all", "linger_ms": 5}
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, **options)
    await producer.start()
    try:
        await asyncio.sleep(1.0)  # the broker settles after creating the topic
        process = cluster.members[0].process
        if process is None:
            raise RuntimeError("the Kafka node is not running")
        broker_pid = process.pid
        broker, own = cpu_seconds(broker_pid), time.process_time()
        indexed = [(i, key, value) for i, (key, value) in enumerate(payloads)]
        topic = topic_name(settings, topics.CUSTOMER_FEATURES)
        sent = await send_keyed_batches(producer, topic, indexed, headers)
        await asyncio.gather(*(ack for ack, _ in sent))
        own = time.process_time() - own
        await asyncio.sleep(0.5)  # the broker's replies and log flush of the last batches
        broker = cpu_seconds(broker_pid) - broker
    finally:
        await producer.stop()
    return own / len(payloads) * 1e6, broker / len(payloads) * 1e6, len(sent)


async def main(args: argparse.Namespace) -> None:
    """Alternate the four legs `--repeat` times on one Kafka node; print each leg and the medians."""
    payloads = feature_payloads(args.events, seed=2)
    traced = trace_headers(args.events, args.sample, seed=2)
    cluster = await asyncio.to_thread(KafkaCluster(nodes=1).start)
    figures: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    try:
        for repeat in range(args.repeat):
            for number, config in enumerate(CONFIGS):
                for header in ("none", "traceparent"):
                    prefix = f"produce{repeat}{number}{header[0]}."
                    carried = traced if header != "none" else None
                    result = await leg(cluster, config, carried, payloads, prefix)
                    figures.setdefault((config, header), []).append(result)
                    print(f"{config:<18} {header:<11} producer {result[0]:5.2f} us, broker {result[1]:5.2f} "
                          f"us an event, {result[2]} produce requests", flush=True)
    finally:
        await asyncio.to_thread(cluster.stop)
    print(f"medians over {args.repeat} ({args.events} events a leg):")
    for (config, header), results in figures.items():
        producer = statistics.median(r[0] for r in results)
        broker = statistics.median(r[1] for r in results)
        print(f"{config:<18} {header:<11} producer {producer:5.2f} + broker {broker:5.2f} = "
              f"{producer + broker:5.2f} us an event, {results[0][2]} produce requests")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--sample", type=float, default=0.01, help="Sampled share of the traceparents.")
    return parser.parse_args()


if __name__ == "__main__":
    run_terminable(main(parse_args()))

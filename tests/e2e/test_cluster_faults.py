"""A three-broker Apache Kafka cluster (RF 3, min.insync.replicas 2, acks=all, idempotent producers) under
faults while events flow through the real services: `streamscore api`, `scorer` and `sink` processes.

1. the leader of the busiest partitions SIGKILLed mid-stream, then restarted;
2. a rolling restart of all three brokers (controlled shutdown, restart, wait until in sync; one by one);
3. one broker stopped for good: two in-sync replicas remain, so the API keeps answering 202.

/ready is probed every 0.5 s and must answer 200 throughout: two brokers always serve.

The client posts 20 events every 0.2 s and posts a refused request again with the same event ids. Every
event answered 202 must be stored exactly once, and every answer that is not 202 must be a 503. Each test
prints one `FAULT` line: events, answers, stored, lost, duplicated, and the seconds from the fault to the
first row stored after it, to the last row, and the longest stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.kafka import INCARNATION_TOPIC, ensure_topics
from infra.settings import KafkaSettings
from schemas import topics
from streamscore.kafka_server import KafkaCluster
from tests.helpers.api_stream import ApiProcess, ApiStream, ReadinessProbe, start_api
from tests.helpers.cluster import StoredRows, busiest_leader, describe_topics, wait_in_sync
from tests.helpers.engines import Broker, broker_settings
from tests.helpers.faults import (
    SCORER_START_S,
    exactly_once,
    report,
    service_env,
    service_process,
    sigkill,
    stored_at_least,
)
from tests.helpers.pipeline import count, make_events, wait_for

pytestmark = [pytest.mark.engines, pytest.mark.slow]

BUSY_TOPICS = (topics.CUSTOMER_FEATURES, topics.PREDICTIONS)
WARM_UP = 100  # events stored before the stream starts: every service has started and joined its group
BEFORE_FAULT = 300  # events of the stream stored before the fault: it lands mid-stream
Fault = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Stack:
    """The services on the cluster, their settings and logs."""

    settings: KafkaSettings
    database_url: str
    api: ApiProcess
    processes: dict[str, subprocess.Popen[bytes]]
    logs: Path

    def lines(self, name: str) -> list[str]:
        """One service's log lines."""
        return (self.logs / f"{name}.log").read_text(errors="replace").splitlines()

    def error_lines(self) -> dict[str, int]:
        """Per service, the log lines at level error (each a JSON object)."""
        return {name: sum('"level":"error"' in line for line in self.lines(name)) for name in self.processes}

    def lines_with(self, text: str) -> int:
        """Log lines of every service that contain `text`."""
        return sum(text in line for name in self.processes for line in self.lines(name))

    def alive(self) -> dict[str, bool]:
        return {name: process.poll() is None for name, process in self.processes.items()}

    def tails(self, last: int = 25) -> str:
        """The last lines of every service's log."""
        return "\n".join(f"--- {name}.log\n" + "\n".join(self.lines(name)[-last:]) for name in self.processes)


@contextlib.asynccontextmanager
async def cluster_stack(cluster: KafkaCluster, database_url: str, redis_url: str,
                        logs: Path) -> AsyncIterator[Stack]:
    """Topics with RF 3 on the full three-address bootstrap list; scorer, sink and API processes."""
    settings = broker_settings(Broker("kafka", cluster.bootstrap, idempotent=True), replication_factor=3)
    await wait_in_sync(settings)  # the previous test's broker may still be catching up
    await ensure_topics(settings)
    env = service_env(settings, database_url, redis_url, batch_max_records="200")
    processes = {name: service_process(name, env, logs / f"{name}.log") for name in ("scorer", "sink")}
    try:
        api = await start_api(env, database_url, logs / "api.log", SCORER_START_S)
        processes["api"] = api.process
        yield Stack(settings, database_url, api, processes, logs)
    finally:
        for process in processes.values():
            if process.poll() is None:
                sigkill(process)


async def stream_through(stack: Stack, prefix: str, fault: Fault, after_s: float,
                         pool: int = 6000) -> tuple[ApiStream, dict[str, Any]]:
    """Warm up, post a stream, run `fault` once BEFORE_FAULT of its events are stored, post `after_s` more
    seconds, then wait until every accepted event is stored. The stream and the figures."""
    events = make_events(WARM_UP + pool, prefix, seed=31)
    warm = ApiStream(stack.api, events[:WARM_UP]).start()
    await warm.finished()
    await wait_for(stored_at_least(stack.database_url, WARM_UP), within_s=SCORER_START_S)
    rows = StoredRows(stack.database_url).start()
    ready = ReadinessProbe(stack.api).start()
    stream = ApiStream(stack.api, events[WARM_UP:]).start()
    try:
        await wait_for(stored_at_least(stack.database_url, WARM_UP + BEFORE_FAULT), within_s=60)
        fault_at = time.monotonic()
        about = await fault()
        await asyncio.sleep(after_s)
        accepted = warm.accepted + await stream.finished(stop=True)
        try:
            await wait_for(stored_at_least(stack.database_url, len(accepted)), within_s=120)
        except AssertionError:
            print(f"DIAG stored {await count(stack.database_url, 'predictions')} of {len(accepted)}; "
                  f"alive {stack.alive()}\n{stack.tails()}")
            raise
    finally:
        await stream.cancel()
        await ready.stop()
        await rows.stop()
    figures = {**await exactly_once(stack.database_url, accepted),
               "rows": await count(stack.database_url, "predictions"),
               "answers": dict(stream.answers), **rows.recovery(fault_at), **about,
               "ready_since_fault": ready.since(fault_at), "unready": ready.unready[:3],
               "replicas": await replicas(stack.settings),
               "topics_recreated": stack.lines_with("broker lost topics"),
               "error_lines": stack.error_lines(), "alive": stack.alive()}
    return stream, figures


async def replicas(settings: KafkaSettings) -> dict[str, list[int]]:
    """Per topic of the test (the topic guard's marker too), the replica counts of its partitions."""
    prefix = settings.topic_prefix
    return {t["topic"].removeprefix(prefix): sorted({len(p["replicas"]) for p in t["partitions"]})
            for t in await describe_topics(settings) if t["topic"].startswith(prefix)}


def assert_exactly_once(stream: ApiStream, figures: dict[str, Any]) -> None:
    """Every event posted was accepted (a refusal retried), stored once; a refusal was only ever a 503;
    /ready said 200 throughout, as at least two brokers served."""
    assert set(stream.answers) <= {202, 503}, stream.refusals[:5]
    assert len(stream.accepted) == len(set(stream.accepted)) == stream.taken
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["dead_lettered"] == 0, figures
    assert figures["rows"] == figures["sent"], figures  # nothing stored that was not posted
    assert all(figures["alive"].values()), figures
    assert set(figures["ready_since_fault"]) == {200}, figures
    # Every topic, the guard's marker too, was created with RF 3, and the guard recreated none of them.
    assert INCARNATION_TOPIC in figures["replicas"] and all(r == [3] for r in figures["replicas"].values())
    assert figures["topics_recreated"] == 0, figures


async def test_leader_of_the_busiest_partitions_sigkilled_and_restarted(
    kafka_cluster3: KafkaCluster, database_url: str, redis_url: str, unique_id: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with cluster_stack(kafka_cluster3, database_url, redis_url, tmp_path) as stack:

        async def kill_and_restart() -> dict[str, Any]:
            leader, load = await busiest_leader(stack.settings, BUSY_TOPICS)
            kafka_cluster3.kill(leader)
            await asyncio.sleep(10)  # past broker.session.timeout.ms (6 s): the controller fences it
            restarting = time.monotonic()
            await asyncio.to_thread(kafka_cluster3.restart, leader)
            restart_s = round(time.monotonic() - restarting, 2)
            return {"killed": leader, "records_per_leader": load, "down_s": round(10 + restart_s, 2),
                    "in_sync_after_restart_s": await wait_in_sync(stack.settings)}

        stream, figures = await stream_through(stack, f"kl{unique_id}", kill_and_restart, after_s=5)
    report("busiest leader SIGKILL + restart (3 brokers)", **figures,
           test_s=round(time.monotonic() - started, 1))
    assert_exactly_once(stream, figures)


async def test_rolling_restart_of_all_three_brokers(
    kafka_cluster3: KafkaCluster, database_url: str, redis_url: str, unique_id: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with cluster_stack(kafka_cluster3, database_url, redis_url, tmp_path) as stack:

        async def rolling_restart() -> dict[str, Any]:
            took = {}
            for node in kafka_cluster3.members:
                clock = time.monotonic()
                await asyncio.to_thread(kafka_cluster3.stop_node, node.node_id)
                await asyncio.to_thread(kafka_cluster3.restart, node.node_id)
                await wait_in_sync(stack.settings)  # only then the next one: min ISR 2 holds throughout
                took[node.node_id] = round(time.monotonic() - clock, 2)
            return {"stop_restart_in_sync_s": took}

        stream, figures = await stream_through(stack, f"rr{unique_id}", rolling_restart, after_s=5)
    report("rolling restart (3 brokers)", **figures, test_s=round(time.monotonic() - started, 1))
    assert_exactly_once(stream, figures)


async def test_one_broker_stopped_for_good_the_api_keeps_accepting(
    kafka_cluster3: KafkaCluster, database_url: str, redis_url: str, unique_id: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with cluster_stack(kafka_cluster3, database_url, redis_url, tmp_path) as stack:

        async def stop_for_good() -> dict[str, Any]:
            leader, load = await busiest_leader(stack.settings, BUSY_TOPICS)
            clock = time.monotonic()
            await asyncio.to_thread(kafka_cluster3.stop_node, leader)  # the fixture starts it after the test
            return {"stopped": leader, "records_per_leader": load,
                    "stop_s": round(time.monotonic() - clock, 2)}

        stream, figures = await stream_through(stack, f"sg{unique_id}", stop_for_good, after_s=10)
    report("one broker stopped for good (3 brokers)", **figures, test_s=round(time.monotonic() - started, 1))
    assert_exactly_once(stream, figures)
    assert set(stream.answers) == {202}, stream.refusals[:5]  # two in-sync replicas: every event accepted

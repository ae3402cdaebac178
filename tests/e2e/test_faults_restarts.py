"""Faults that restart services: the scorer SIGKILLed, a 1 -> 2 -> 1 scorer rebalance, a Postgres outage.

Scorers and the outage sink run as `streamscore` subprocesses; the Postgres outage uses a private server.
Each test prints one `FAULT` line (sent, stored, lost, duplicated, dead-lettered, recovery seconds).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from migrations.runner import upgrade_head
from schemas import topics
from sink.app import build_app as build_sink
from streamscore.private_postgres import PrivatePostgres
from tests.helpers.faults import (
    SCORER_START_S,
    Stopwatch,
    Stream,
    exactly_once,
    keyed,
    report,
    service_env,
    service_process,
    settled_cache_mismatches,
    sigkill,
    started,
    stored_at_least,
)
from tests.helpers.pipeline import (
    committed_offsets,
    count,
    encoded,
    make_events,
    prediction,
    produce,
    sink_settings,
    wait_for,
)

pytestmark = pytest.mark.slow


async def test_scorer_sigkilled_twice_mid_stream_stores_every_event_once(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str, tmp_path: Path
) -> None:
    await ensure_topics(kafka_settings)
    env = service_env(kafka_settings, database_url, redis_url, batch_max_records="100")
    events = make_events(6000, f"s{unique_id}", seed=5)
    features = topic_name(kafka_settings, topics.CUSTOMER_FEATURES)
    log_path = tmp_path / "scorer.log"
    sink = build_sink(sink_settings(kafka_settings, database_url, redis_url))
    scorer = service_process("scorer", env, log_path)
    kills: list[tuple[int, int]] = []  # (rows stored, events sent) at each SIGKILL
    try:
        async with started(sink):
            await produce(kafka_settings, features, keyed(events[:200]))
            await wait_for(stored_at_least(database_url, 200), within_s=SCORER_START_S)
            stream = Stream(kafka_settings, features, keyed(events[200:])).start()
            floor = 200
            for _ in range(2):
                await wait_for(stored_at_least(database_url, floor + 300), within_s=SCORER_START_S)
                sigkill(scorer)  # mid-batch: stored rows trail the events sent
                floor = await count(database_url, "predictions")
                kills.append((floor, 200 + stream.sent))
                scorer = service_process("scorer", env, log_path)
            clock = Stopwatch()
            await stream.finished()
            await wait_for(stored_at_least(database_url, len(events)), within_s=SCORER_START_S)
            recovery_s = clock()
            figures = await exactly_once(database_url, [str(e.event_id) for e in events])
    finally:
        sigkill(scorer)
    report("scorer SIGKILL x2", **figures, stored_sent_at_kills=kills, recovery_after_last_kill_s=recovery_s)
    assert figures["stored"] == len(events) and figures["duplicated"] == 0 and figures["dead_lettered"] == 0
    assert all(stored < len(events) for stored, _ in kills)


async def test_rebalance_one_two_one_scorers_stores_every_event_once(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str, tmp_path: Path
) -> None:
    await ensure_topics(kafka_settings)
    env = service_env(kafka_settings, database_url, redis_url, batch_max_records="100")
    events = make_events(10_000, f"r{unique_id}", seed=6)  # a pool: the stream runs until stopped
    features = topic_name(kafka_settings, topics.CUSTOMER_FEATURES)
    sink = build_sink(sink_settings(kafka_settings, database_url, redis_url))
    first = service_process("scorer", env, tmp_path / "scorer-1.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        async with started(sink):
            await produce(kafka_settings, features, keyed(events[:200]))
            await wait_for(stored_at_least(database_url, 200), within_s=SCORER_START_S)
            # ~90 events/s: the pool outlasts a slow second start (TensorFlow + join took up to 54 s here)
            stream = Stream(kafka_settings, features, keyed(events[200:]), tick_s=0.2).start()
            second = service_process("scorer", env, tmp_path / "scorer-2.log")
            joined = Stopwatch()

            async def second_assigned() -> bool:
                return "assigned to partitions" in (tmp_path / "scorer-2.log").read_text(errors="replace")

            await wait_for(second_assigned, within_s=SCORER_START_S)  # 1 -> 2: it holds partitions now
            joined_s, at_join = joined(), await count(database_url, "predictions")
            await asyncio.sleep(3)  # both members score (the stored count may catch up with the sent one)
            at_sigterm, sent_at_sigterm = await count(database_url, "predictions"), 200 + stream.sent
            second.terminate()  # 2 -> 1: the leaving member gives its partitions back
            second_exit = await asyncio.to_thread(second.wait, 60)
            clock = Stopwatch()
            await asyncio.sleep(2)  # events keep flowing to the one scorer left
            sent = 200 + await stream.finished(stop=True)
            await wait_for(stored_at_least(database_url, sent), within_s=SCORER_START_S)
            recovery_s = clock()
            figures = await exactly_once(database_url, [str(e.event_id) for e in events[:sent]])
            first_alive = first.poll() is None
    finally:
        sigkill(first)
        if second is not None and second.poll() is None:
            sigkill(second)
    report("rebalance 1->2->1 scorers", **figures, stored_while_two=at_sigterm - at_join,
           stored_sent_at_sigterm=(at_sigterm, sent_at_sigterm), second_joined_s=joined_s,
           second_exit=second_exit, recovery_after_sigterm_s=recovery_s)
    assert figures["stored"] == sent and figures["duplicated"] == 0 and figures["dead_lettered"] == 0
    assert first_alive and second_exit == 0 and at_join < at_sigterm and sent_at_sigterm < sent


async def test_postgres_outage_sink_keeps_its_pid_commits_nothing_and_catches_up(
    kafka_settings: KafkaSettings, redis_url: str, unique_id: str, tmp_path: Path
) -> None:
    await ensure_topics(kafka_settings)
    server = PrivatePostgres().init().start()
    sink: subprocess.Popen[bytes] | None = None
    try:
        database_url = server.url()
        await asyncio.to_thread(upgrade_head, database_url)
        env = service_env(kafka_settings, database_url, redis_url, batch_max_records="250")
        waves = [[prediction(f"p{unique_id}-{w}-{i}", minute=w) for i in range(1000)] for w in range(3)]
        topic = topic_name(kafka_settings, topics.PREDICTIONS)
        group = kafka_settings.topic_prefix + topics.SINK_GROUP
        sink = service_process("sink", env, tmp_path / "sink.log")
        pid = sink.pid
        await produce(kafka_settings, topic, encoded(waves[0]))
        await wait_for(stored_at_least(database_url, 1000), within_s=90)
        await asyncio.sleep(1)  # the last batch's offsets are committed after its transaction
        await asyncio.to_thread(server.stop)
        outage = Stopwatch()
        await produce(kafka_settings, topic, encoded(waves[1]))  # arrives while Postgres is down
        await asyncio.sleep(2)
        before = await committed_offsets(kafka_settings, group, [topic])
        await asyncio.sleep(max(0.0, 10 - outage()))
        after = await committed_offsets(kafka_settings, group, [topic])
        alive_in_outage = sink.poll() is None
        await asyncio.to_thread(server.start)
        outage_s = outage()
        clock = Stopwatch()
        await produce(kafka_settings, topic, encoded(waves[2]))
        await wait_for(stored_at_least(database_url, 3000), within_s=120)
        recovery_s = clock()
        ids = [str(p.event_id) for wave in waves for p in wave]
        figures = await exactly_once(database_url, ids)
        stale = await settled_cache_mismatches(redis_url, database_url, "v-test")
        same_pid = sink.poll() is None and sink.pid == pid
    finally:
        if sink is not None:
            sigkill(sink)
        await asyncio.to_thread(server.remove)
    report("postgres outage", **figures, outage_s=outage_s, offsets_moved_in_outage=before != after,
           sink_alive_in_outage=alive_in_outage, same_pid=same_pid, stale_cache=stale,
           recovery_after_restart_s=recovery_s)
    assert figures["stored"] == 3000 and figures["duplicated"] == 0 and figures["dead_lettered"] == 0
    assert alive_in_outage and same_pid and before == after and stale == 0

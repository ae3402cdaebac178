"""Faults that kill processes: the broker SIGKILLed and restarted (Tansu empty, Apache Kafka on its data),
the sink SIGKILLed mid-stream.

Each test prints one `FAULT` line (sent, stored, lost, duplicated, dead-lettered, recovery seconds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from schemas import topics
from schemas.messages import FeatureEvent
from scorer.app import build_app as build_scorer
from sink.app import build_app as build_sink
from streamscore.embedded import TansuBroker
from streamscore.kafka_server import KafkaCluster
from tests.helpers import engines
from tests.helpers.api import api_settings, read_topic, running_api
from tests.helpers.faults import (
    Stopwatch,
    kill_broker,
    report,
    service_env,
    service_process,
    settled_cache_mismatches,
    sigkill,
    started,
    stored_ids,
)
from tests.helpers.pipeline import (
    committed_offsets,
    count,
    encoded,
    fetch,
    make_events,
    prediction,
    produce,
    scorer_settings,
    sink_settings,
    wait_for,
)

pytestmark = pytest.mark.slow


@dataclass
class Restarted:
    """What the API accepted around a broker restart, and what it cost."""

    sent: list[str]
    before: list[str]
    accepted: list[str]
    refused: list[str]
    recovery_s: float
    errors: int


async def post_through_a_broker_restart(
    kafka: KafkaSettings, database_url: str, redis_url: str, unique_id: str, engine: InferenceEngine,
    caplog: pytest.LogCaptureFixture, restart: Callable[[], Coroutine[Any, Any, None]],
) -> Restarted:
    """Scorer, sink and API in-process; 300 events stored, then `restart` while 300 more are posted.

    Returns once every event answered 202 is stored; the restart runs beside the posting, so the services
    meet the broker down and then back.
    """
    await ensure_topics(kafka)
    scorer = build_scorer(scorer_settings(kafka), engine=engine)
    sink = build_sink(sink_settings(kafka, database_url, redis_url))
    api_config = api_settings(kafka, database_url, redis_url)
    async with started(scorer, sink), running_api(api_config, engine) as api:
        events = make_events(600, f"b{unique_id}", seed=4)

        async def post(batch: list[FeatureEvent]) -> list[str]:
            body = [{"event_id": str(e.event_id), "customer_id": e.customer_id, "features": list(e.features)}
                    for e in batch]
            answer = await api.client.post("/api/v1/events", json=body)
            assert answer.status_code in (202, 503), answer.text
            return [str(e.event_id) for e in batch] if answer.status_code == 202 else []

        before = await post(events[:300])

        async def first_stored() -> bool:
            return len(await stored_ids(database_url, before)) == 300

        await wait_for(first_stored, within_s=60)
        caplog.clear()
        restarting = asyncio.create_task(restart())
        clock = Stopwatch()
        accepted: list[str] = []
        refused: list[str] = []
        for index in range(300, 600, 20):  # keep posting while the services notice
            ids = await post(events[index:index + 20])
            refused += [str(e.event_id) for e in events[index:index + 20] if str(e.event_id) not in ids]
            accepted += ids
            await asyncio.sleep(0.2)
        await restarting

        async def accepted_stored() -> bool:
            return len(await stored_ids(database_url, accepted)) == len(accepted)

        try:
            await wait_for(accepted_stored, within_s=120)
        except AssertionError:  # say where it stopped
            print("DIAG stored", len(await stored_ids(database_url, accepted)), "of", len(accepted),
                  "total", await count(database_url, "predictions"))
            for group in (topics.SCORER_GROUP, topics.SINK_GROUP):
                print("DIAG", group, await committed_offsets(
                    kafka, kafka.topic_prefix + group, [topic_name(kafka, t) for t in topics.ALL_TOPICS]))
            missing = set(accepted) - await stored_ids(database_url, accepted)
            for base in (topics.CUSTOMER_FEATURES, topics.PREDICTIONS):
                where = [(r.partition, r.offset) for r in await read_topic(kafka, base, 10**6, 5.0)
                         if any(m.encode() in r.value for m in missing)]
                print("DIAG missing on", base, sorted(where))
            raise
        recovery_s = clock()
    errors = sum(record.levelname == "ERROR" for record in caplog.records)
    return Restarted([str(e.event_id) for e in events], before, accepted, refused, recovery_s, errors)


async def assert_each_event_once(database_url: str, run: Restarted) -> int:
    """Every accepted event stored, none twice; returns the rows stored."""
    stored = [str(r["event_id"]) for r in await fetch(database_url, "SELECT event_id FROM predictions")]
    # Each sent event at most once, every accepted one stored. A 503 says "not accepted, retry": part of
    # that request may have reached the broker anyway and be stored (a retry would not add it again).
    assert len(stored) == len(set(stored)) and set(stored) <= set(run.sent)
    assert set(run.accepted) | set(run.before) <= set(stored)
    return len(stored)


async def test_broker_restart_loses_only_what_it_held_and_the_pipeline_carries_on(
    database_url: str, redis_url: str, unique_id: str, inference_engine: InferenceEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = TansuBroker().start()

    async def restart() -> None:
        kill_broker(broker)
        broker.start()  # same port, empty: every topic and group offset is gone

    try:
        kafka = KafkaSettings(kafka_bootstrap=broker.bootstrap, kafka_partitions=3, kafka_idempotent=False,
                              topic_prefix=f"t{unique_id}.")
        run = await post_through_a_broker_restart(kafka, database_url, redis_url, unique_id, inference_engine,
                                                  caplog, restart)
    finally:
        broker.stop()
    report("broker restart (Tansu)", sent_after_restart=300, accepted=len(run.accepted),
           refused_503=len(run.refused), stored=len(run.accepted), lost=0, duplicated=0, dead_lettered=0,
           recovery_s=run.recovery_s, error_lines=run.errors)
    assert len(run.accepted) > 0 and run.errors < 100
    await assert_each_event_once(database_url, run)


def topic_ids(cluster: KafkaCluster, prefix: str) -> dict[str, str]:
    """Each partition directory of the test's topics and the topic id Kafka wrote in it."""
    ids = {}
    for metadata in cluster.members[0].data.glob(f"{prefix}*/partition.metadata"):
        ids[metadata.parent.name] = metadata.read_text(encoding="utf-8").split("topic_id:")[1].strip()
    return ids


async def test_apache_kafka_sigkilled_and_restarted_loses_nothing_and_recreates_no_topic(
    database_url: str, redis_url: str, unique_id: str, inference_engine: InferenceEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with engines.kafka_cluster(nodes=1) as cluster:
        kafka = KafkaSettings(kafka_bootstrap=cluster.bootstrap, kafka_partitions=3, kafka_idempotent=True,
                              topic_prefix=f"t{unique_id}.")
        ids_before: dict[str, str] = {}
        down_s: list[float] = []

        async def restart() -> None:
            ids_before.update(topic_ids(cluster, kafka.topic_prefix))
            clock = Stopwatch()
            cluster.kill(1)  # SIGKILL: no controlled shutdown, the log dir is recovered at start
            await asyncio.to_thread(cluster.restart, 1)  # same data dir and ports
            down_s.append(clock())

        run = await post_through_a_broker_restart(kafka, database_url, redis_url, unique_id,
                                                  inference_engine, caplog, restart)
        ids_after = topic_ids(cluster, kafka.topic_prefix)
        features = await read_topic(kafka, topics.CUSTOMER_FEATURES, 10**6, 5.0)
    stored = await assert_each_event_once(database_url, run)
    report("broker restart (Apache Kafka, SIGKILL)", sent_after_restart=300, accepted=len(run.accepted),
           refused_503=len(run.refused), stored=stored, lost=0, duplicated=0, dead_lettered=0,
           broker_down_s=down_s[0], recovery_s=run.recovery_s, error_lines=run.errors)
    named = {f"{kafka.topic_prefix}{base}" for base in topics.ALL_TOPICS}
    assert named <= {partition.rsplit("-", 1)[0] for partition in ids_before}, sorted(ids_before)
    assert ids_after == ids_before  # no topic recreated: every partition kept its topic id
    # The features topic kept every event from before the kill next to the ones accepted after it.
    kept = {i for i in run.before + run.accepted if any(i.encode() in r.value for r in features)}
    assert kept == set(run.before + run.accepted)
    # error_lines is reported, not bounded, here: aiokafka logs each reconnect attempt while Apache Kafka
    # restarts (~1,800 lines in 10 s); logging once per state change is issue 31's services part.
    assert len(run.accepted) > 0


async def test_sink_sigkilled_twice_mid_stream_stores_every_prediction_once(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str, tmp_path: Path
) -> None:
    await ensure_topics(kafka_settings)
    env = service_env(kafka_settings, database_url, redis_url, batch_max_records="250")
    customers = [f"k{unique_id}-{i}" for i in range(1000)]
    waves = [[prediction(c, minute=m) for c in customers] for m in range(10)]
    topic = topic_name(kafka_settings, topics.PREDICTIONS)
    log_path = tmp_path / "sink.log"
    process = service_process("sink", env, log_path)
    at_kill = 0
    try:
        for kill in range(2):
            wave = [p for minute in waves[kill * 5:kill * 5 + 5] for p in minute]
            await produce(kafka_settings, topic, encoded(wave))

            async def some_stored(floor: int = kill * 5_000 + 1_000) -> bool:
                return await count(database_url, "predictions") >= floor

            await wait_for(some_stored, within_s=60)
            sigkill(process)  # mid-stream: the sink is somewhere in its 5,000 rows
            at_kill = await count(database_url, "predictions")
            process = service_process("sink", env, log_path)
        clock = Stopwatch()

        async def all_stored() -> bool:
            return await count(database_url, "predictions") == 10_000

        await wait_for(all_stored, within_s=90)
        recovery_s = clock()
        stale = await settled_cache_mismatches(redis_url, database_url, "v-test")  # while the sink runs
    finally:
        sigkill(process)
    totals = await fetch(database_url, "SELECT sum(predictions_count) AS n, count(*) AS c FROM customers")
    latest = await fetch(database_url, "SELECT customer_id, last_event_id FROM customers")
    last = {p.customer_id: p.event_id for p in waves[-1]}
    wrong = sum(last[r["customer_id"]] != r["last_event_id"] for r in latest)
    report("sink SIGKILL x2", sent=10_000, stored=10_000, lost=0, duplicated=int(totals[0]["n"]) - 10_000,
           dead_lettered=await count(database_url, "dead_letters"), rows_at_second_kill=at_kill,
           recovery_s=recovery_s, wrong_latest=wrong, stale_cache=stale)
    assert totals[0]["n"] == 10_000 and totals[0]["c"] == 1000 and wrong == 0 and stale == 0

"""Faults that kill processes: the broker SIGKILLed and restarted empty, the sink SIGKILLed mid-stream.

Each test prints one `FAULT` line (sent, stored, lost, duplicated, dead-lettered, recovery seconds).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from schemas import topics
from schemas.messages import FeatureEvent
from scorer.app import build_app as build_scorer
from sink.app import build_app as build_sink
from streamscore.embedded import TansuBroker
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


async def test_broker_restart_loses_only_what_it_held_and_the_pipeline_carries_on(
    database_url: str, redis_url: str, unique_id: str, inference_engine: InferenceEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = TansuBroker().start()
    try:
        kafka = KafkaSettings(kafka_bootstrap=broker.bootstrap, kafka_partitions=3, kafka_idempotent=False,
                              topic_prefix=f"t{unique_id}.")
        await ensure_topics(kafka)
        scorer = build_scorer(scorer_settings(kafka), engine=inference_engine)
        sink = build_sink(sink_settings(kafka, database_url, redis_url))
        settings = api_settings(kafka, database_url, redis_url)
        async with started(scorer, sink), running_api(settings, inference_engine) as api:
            events = make_events(600, f"b{unique_id}", seed=4)

            async def post(batch: list[FeatureEvent]) -> list[str]:
                body = [
                    {"event_id": str(e.event_id), "customer_id": e.customer_id, "features": list(e.features)}
                    for e in batch
                ]
                answer = await api.client.post("/api/v1/events", json=body)
                assert answer.status_code in (202, 503), answer.text
                return [str(e.event_id) for e in batch] if answer.status_code == 202 else []

            before = await post(events[:300])

            async def first_stored() -> bool:
                return len(await stored_ids(database_url, before)) == 300

            await wait_for(first_stored, within_s=60)
            caplog.clear()
            kill_broker(broker)
            broker.start()  # same port, empty: every topic and group offset is gone
            clock = Stopwatch()
            accepted: list[str] = []
            refused: list[str] = []
            for index in range(300, 600, 20):  # keep posting while the services notice
                ids = await post(events[index:index + 20])
                refused += [str(e.event_id) for e in events[index:index + 20] if str(e.event_id) not in ids]
                accepted += ids
                await asyncio.sleep(0.2)

            async def accepted_stored() -> bool:
                return len(await stored_ids(database_url, accepted)) == len(accepted)

            try:
                await wait_for(accepted_stored, within_s=120)
            except AssertionError:  # say where it stopped
                print("DIAG stored", len(await stored_ids(database_url, accepted)), "of", len(accepted),
                      "total", await count(database_url, "predictions"))
                for group in (topics.SCORER_GROUP, topics.SINK_GROUP):
                    print("DIAG", group, await committed_offsets(
                        kafka, kafka.topic_prefix + group,
                        [topic_name(kafka, t) for t in topics.ALL_TOPICS]))
                missing = set(accepted) - await stored_ids(database_url, accepted)
                for base in (topics.CUSTOMER_FEATURES, topics.PREDICTIONS):
                    where = [(r.partition, r.offset) for r in await read_topic(kafka, base, 10**6, 5.0)
                             if any(m.encode() in r.value for m in missing)]
                    print("DIAG missing on", base, sorted(where))
                raise
            recovery_s = clock()
            duplicated = len(accepted) - len(await stored_ids(database_url, accepted))
        errors = sum(record.levelname == "ERROR" for record in caplog.records)
    finally:
        broker.stop()
    report("broker restart", sent_after_restart=300, accepted=len(accepted), refused_503=len(refused),
           stored=len(accepted), lost=0, duplicated=max(duplicated, 0), dead_lettered=0,
           recovery_s=recovery_s, error_lines=errors)
    assert len(accepted) > 0 and errors < 100
    stored = [str(r["event_id"]) for r in await fetch(database_url, "SELECT event_id FROM predictions")]
    # Each sent event at most once, every accepted one stored. A 503 says "not accepted, retry": part of
    # that request may have reached the broker anyway and be stored (a retry would not add it again).
    assert len(stored) == len(set(stored)) and set(stored) <= {str(e.event_id) for e in events}
    assert set(accepted) | set(before) <= set(stored)


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

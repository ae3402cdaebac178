"""Dead-letter redrive on the real engines (Tansu, Postgres, Redis): the API, a running scorer and sink.

Poison events are dead-lettered and stored; then one is corrected and redriven (stored once), one keeps
failing until it is quarantined (its count survives each round trip through the header), one whose payload
was cut is refused, and a dry run changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from schemas import topics
from schemas.messages import DEAD_LETTER_PAYLOAD_MAX
from schemas.redrive import REDRIVE_HEADER
from scorer.app import build_app as build_scorer
from tests.helpers.api import Api, read_topic, topic_size
from tests.helpers.pipeline import (
    count,
    fetch,
    make_events,
    produce,
    running,
    scorer_settings,
    sink_settings,
    wait_for,
)

MAX_REDRIVES = 3  # ApiSettings.dead_letter_redrive_max default


@contextlib.asynccontextmanager
async def pipeline(
    kafka: KafkaSettings, database_url: str, redis_url: str, engine: InferenceEngine
) -> AsyncIterator[None]:
    """The scorer and the sink on the test's broker prefix and database."""
    scorer = build_scorer(scorer_settings(kafka), engine=engine)
    await scorer.start()
    try:
        async with running(sink_settings(kafka, database_url, redis_url)):
            yield
    finally:
        await scorer.stop()


async def letters(database_url: str, customer_id: str) -> list[Any]:
    """The stored dead letters of a customer, oldest first."""
    query = "SELECT * FROM dead_letters WHERE customer_id = $1 ORDER BY id"
    return await fetch(database_url, query, customer_id)


async def redrive(api: Api, **body: Any) -> dict[str, Any]:
    """POST a redrive and return its report."""
    response = await api.client.post("/api/v1/dead-letters/redrive", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_poison_records_are_redriven_once_fixed_and_quarantined_when_they_keep_failing(
    api: Api, kafka_settings: KafkaSettings, database_url: str, redis_url: str,
    inference_engine: InferenceEngine,
) -> None:
    await ensure_topics(kafka_settings)
    good = make_events(3, "ok", seed=5)
    fixable = orjson.loads(make_events(1, "fix", seed=6)[0].model_dump_json())
    fixable["features"][3] = 99  # MGEMLEEF is 1..6
    stubborn = {"customer_id": "stuck", "features": [1, 2]}
    huge = {"customer_id": "huge", "features": [1], "note": "x" * (DEAD_LETTER_PAYLOAD_MAX + 100)}
    features_topic = topic_name(kafka_settings, topics.CUSTOMER_FEATURES)
    messages = [(e.customer_id.encode(), e.model_dump_json().encode()) for e in good]
    messages += [(b"fix-0", orjson.dumps(fixable)), (b"stuck", orjson.dumps(stubborn)),
                 (b"huge", orjson.dumps(huge))]
    await produce(kafka_settings, features_topic, messages)

    async with pipeline(kafka_settings, database_url, redis_url, inference_engine):

        async def first_round() -> bool:
            stored = await count(database_url, "predictions")
            return await count(database_url, "dead_letters") == 3 and stored == 3

        await wait_for(first_round, within_s=30)

        page = await api.client.get("/api/v1/dead-letters", params={"stage": "validation"})
        listed = page.json()["items"]
        assert {item["customer_id"] for item in listed} == {"fix-0", "stuck", "huge"}
        assert all(item["status"] == "open" and item["redrive_count"] == 0 for item in listed)
        by_reason = (await api.client.get("/api/v1/dead-letters", params={"reason": "MGEMLEEF"})).json()
        assert [item["customer_id"] for item in by_reason["items"]] == ["fix-0"]
        cut_id = next(item["id"] for item in listed if item["customer_id"] == "huge")
        shown = (await api.client.get(f"/api/v1/dead-letters/{cut_id}")).json()
        assert shown["payload_truncated"] is True and shown["key"] == "huge"
        assert shown["payload"].startswith('{"customer_id":"huge"')

        # A dry run decides as a redrive would, but sends and changes nothing.
        sent_before = await topic_size(kafka_settings, topics.CUSTOMER_FEATURES)
        dry = await redrive(api, stage="validation", dry_run=True)
        assert (dry["dry_run"], dry["redriven"], dry["quarantined"], dry["refused"]) == (True, 2, 0, 1)
        assert sum(g["redriven"] + g["refused"] for g in dry["groups"]) == 3
        assert await topic_size(kafka_settings, topics.CUSTOMER_FEATURES) == sent_before
        assert await count(database_url, "dead_letter_redrives") == 0
        assert {r["status"] for r in await fetch(database_url, "SELECT status FROM dead_letters")} == {"open"}

        # A cut payload is refused, and says why.
        refused = await redrive(api, ids=[cut_id])
        assert refused["refused"] == 1 and "cut" in refused["results"][0]["detail"]

        # The corrected payload is redriven under the same event_id, and stored once even if sent twice.
        fix_id = (await letters(database_url, "fix-0"))[0]["id"]
        fixable["features"][3] = 2
        report = await redrive(api, ids=[fix_id], payload=orjson.dumps(fixable).decode())
        assert report["redriven"] == 1 and report["results"][0]["redrive_count"] == 1
        again = await redrive(api, ids=[fix_id], payload=orjson.dumps(fixable).decode())
        assert again["results"] == []  # no longer open: never sent twice by redrive itself

        # The stubborn record fails after every redrive; its count comes back in each new dead letter.
        for round_trip in range(1, MAX_REDRIVES + 1):
            open_id = (await letters(database_url, "stuck"))[-1]["id"]
            report = await redrive(api, ids=[open_id])
            assert report["redriven"] == 1 and report["results"][0]["redrive_count"] == round_trip

            async def failed_again(expected: int = round_trip + 1) -> bool:
                return len(await letters(database_url, "stuck")) == expected

            await wait_for(failed_again, within_s=30)
        stuck = await letters(database_url, "stuck")
        assert [row["redrive_count"] for row in stuck] == [0, 1, 2, 3]
        assert {bytes(row["source_key"]) for row in stuck} == {b"stuck"}  # the original key went back
        sent_before = await topic_size(kafka_settings, topics.CUSTOMER_FEATURES)
        final = await redrive(api, stage="validation", reason="features")
        assert (final["redriven"], final["quarantined"], final["refused"]) == (0, 1, 1)  # the cut one again
        assert await topic_size(kafka_settings, topics.CUSTOMER_FEATURES) == sent_before

        async def fixed_stored() -> bool:
            return await count(database_url, "predictions") == 4

        await wait_for(fixed_stored, within_s=30)

    rows = await fetch(database_url, "SELECT event_id FROM predictions WHERE customer_id = 'fix-0'")
    assert [str(r["event_id"]) for r in rows] == [fixable["event_id"]]
    query = "SELECT predictions_count FROM customers WHERE customer_id = 'fix-0'"
    customer = await fetch(database_url, query)
    assert customer[0]["predictions_count"] == 1
    statuses = {r["customer_id"]: r["status"] for r in await letters_all(database_url)}
    assert statuses == {"fix-0": "redriven", "stuck": "quarantined", "huge": "open"}
    query = "SELECT outcome, redrive_count, redriven_by FROM dead_letter_redrives ORDER BY id"
    log = await fetch(database_url, query)
    assert [(r["outcome"], r["redrive_count"]) for r in log] == [
        ("redriven", 1), ("redriven", 1), ("redriven", 2), ("redriven", 3), ("quarantined", 3)
    ]
    assert all(r["redriven_by"].startswith("key:test-") for r in log)
    redriven = [r for r in await read_topic(kafka_settings, topics.CUSTOMER_FEATURES, len(messages) + 4)
                if r.key == b"stuck"]
    assert [dict(r.headers).get(REDRIVE_HEADER) for r in redriven] == [None, b"1", b"2", b"3"]


async def letters_all(database_url: str) -> list[Any]:
    """The latest letter per customer."""
    return await fetch(database_url, "SELECT DISTINCT ON (customer_id) customer_id, status FROM dead_letters "
                                     "ORDER BY customer_id, id DESC")


async def test_dead_letter_routes_need_admin_and_refuse_bad_input_with_a_4xx(api: Api) -> None:
    reader = await api.key_with("read")
    assert (await api.client.get("/api/v1/dead-letters", headers=reader)).status_code == 403
    assert (await api.client.post("/api/v1/dead-letters/redrive", json={"all": True},
                                  headers=reader)).status_code == 403
    bad = [
        b"{}",  # no ids, no filter, no all
        b'{"ids": [1, 2], "payload": "{}"}',  # a corrected payload is for one letter
        b'{"ids": [9223372036854775808]}',  # beyond bigint
        b'{"reason": "a\\u0000b"}',  # Postgres text cannot hold NUL
        b'{"ids": [1], "payload": "\\ud800"}',  # not encodable as UTF-8
        b'{"reason": "\\ud800"}',
    ]
    for body in bad:
        response = await api.client.post("/api/v1/dead-letters/redrive", content=body,
                                         headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (body, response.text)
    assert (await api.client.get("/api/v1/dead-letters", params={"reason": "a\x00"})).status_code == 422
    assert (await api.client.get(f"/api/v1/dead-letters/{2**63}")).status_code == 422
    assert (await api.client.get("/api/v1/dead-letters/1")).status_code == 404
    times = {"2026-01-01T00:00:00": 200, "0001-01-01T00:00:00+14:00": 422, "9999-12-31T23:59:59-14:00": 422}
    for since, expected in times.items():  # beyond what UTC holds: refused, not a database error
        listed = await api.client.get("/api/v1/dead-letters", params={"since": since, "until": since})
        assert listed.status_code == expected, listed.text
    empty = await redrive(api, all=True, dry_run=True)
    assert (empty["redriven"], empty["results"]) == (0, [])

"""End to end on the real broker, Postgres and Redis: API, scorer and sink in-process; rows stored once."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from faststream import FastStream
from sqlalchemy import func, select

from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from scorer.app import build_app as build_scorer
from scorer.settings import ScorerSettings
from sink.app import build_app as build_sink
from sink.settings import SinkSettings
from store.tables import Prediction as PredictionRow
from tests.helpers.api import Api, api_settings, batch_csv, dataset_rows, running_api
from tests.helpers.cache import cached_prediction

EVENTS = 40
BATCH_ROWS = 300


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> None:
    """Poll an async predicate until it holds; fail with the timeout otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not reached within {timeout_s:.0f}s")


@contextlib.asynccontextmanager
async def pipeline(
    kafka: KafkaSettings, database_url: str, redis_url: str, engine: InferenceEngine
) -> AsyncIterator[Api]:
    """The API, a scorer and a sink running in this process on one topic prefix."""
    scorer: FastStream = build_scorer(ScorerSettings(**kafka.model_dump()), engine=engine)
    sink: FastStream = build_sink(
        SinkSettings(**kafka.model_dump(), database_url=database_url, redis_url=redis_url)
    )
    # Its cache checks read Redis through the API: 1 s, not the production 50 ms (see api_fixtures.py).
    settings = api_settings(kafka, database_url, redis_url, redis_timeout_seconds=1.0)
    async with running_api(settings, engine) as api:
        await scorer.start()
        await sink.start()
        try:
            yield api
        finally:
            await sink.stop()
            await scorer.stop()


async def _stored_count(api: Api) -> int:
    async with api.services.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(PredictionRow)) or 0)


async def test_events_batch_and_sync_predictions_are_stored_exactly_once(
    kafka_settings: KafkaSettings,
    database_url: str,
    redis_url: str,
    inference_engine: InferenceEngine,
    unique_id: str,
) -> None:
    features = dataset_rows(EVENTS + BATCH_ROWS + 3)
    event_customers = [f"e{unique_id}-{i}" for i in range(EVENTS)]
    batch_customers = [f"b{unique_id}-{i}" for i in range(BATCH_ROWS)]
    lines = batch_csv(batch_customers, features[EVENTS : EVENTS + BATCH_ROWS]).splitlines()
    lines.insert(10, "bad customer!," + lines[10].split(",", 1)[1])  # line 11: rejected at upload
    csv_body = ("\r\n".join(lines) + "\r\n").encode()
    repeated_id = str(uuid.uuid4())

    async with pipeline(kafka_settings, database_url, redis_url, inference_engine) as api:
        single = {"customer_id": event_customers[0], "features": features[0], "event_id": repeated_id}
        array = [
            {"customer_id": c, "features": f}
            for c, f in zip(event_customers[1:], features[1:EVENTS], strict=True)
        ]
        first = await api.client.post("/api/v1/events", json=single)
        again = await api.client.post("/api/v1/events", json=single)  # a client retry: same event_id
        rest = await api.client.post("/api/v1/events", json=array)
        upload = await api.client.post(
            "/api/v1/predict/batch", files={"file": ("e2e.csv", csv_body, "text/csv")}
        )
        sync_customer = f"s{unique_id}"
        sync = await api.client.post(
            "/api/v1/predict/single", json={"customer_id": sync_customer, "features": features[-1]}
        )

        assert first.status_code == again.status_code == rest.status_code == 202
        assert upload.status_code == 202, upload.text
        assert upload.json()["rows"] == BATCH_ROWS and upload.json()["rows_invalid"] == 1
        assert sync.status_code == 200
        task_id = upload.json()["task_id"]
        expected_rows = EVENTS + BATCH_ROWS + 1

        async def batch_completed() -> bool:
            return (await api.client.get(f"/api/v1/predict/batch/{task_id}")).json()["status"] == "completed"

        async def all_stored() -> bool:
            return await _stored_count(api) >= expected_rows

        await wait_until(batch_completed)
        await wait_until(all_stored)
        await asyncio.sleep(1.0)  # a duplicate arriving late would show up now

        async with api.services.sessionmaker() as session:
            rows = (await session.execute(select(PredictionRow))).scalars().all()
        event_ids = {str(row.event_id) for row in rows}
        assert len(rows) == len(event_ids) == expected_rows
        assert repeated_id in event_ids
        assert set(rest.json()["event_ids"]) <= event_ids
        assert sync.json()["event_id"] in event_ids
        by_customer = {row.customer_id: row for row in rows}
        assert set(by_customer) == {*event_customers, *batch_customers, sync_customer}
        assert {row.source for row in rows} == {"event", "batch", "sync"}
        assert all(str(by_customer[c].batch_id) == task_id for c in batch_customers)

        job = (await api.client.get(f"/api/v1/predict/batch/{task_id}")).json()
        assert (job["rows_total"], job["rows_valid"], job["rows_scored"], job["rows_failed"]) == (
            BATCH_ROWS + 1,
            BATCH_ROWS,
            BATCH_ROWS,
            1,
        )
        assert job["errors"][0]["line"] == 11 and job["finished_at"] is not None

        version = inference_engine.model_version
        cached = await api.services.redis.mget([f"predict:{c}:{version}" for c in by_customer])
        assert all(value is not None for value in cached)
        for customer, value in zip(by_customer, cached, strict=True):
            found = cached_prediction(value)
            assert found is not None and str(found.event_id) == str(by_customer[customer].event_id)

        for customer in (event_customers[0], event_customers[-1], batch_customers[5], sync_customer):
            response = await api.client.get(f"/api/v1/predictions/{customer}")
            assert response.status_code == 200
            assert response.json()["event_id"] == str(by_customer[customer].event_id)
        await api.services.redis.delete(f"predict:{batch_customers[6]}:{version}")
        from_postgres = await api.client.get(f"/api/v1/predictions/{batch_customers[6]}")
        assert from_postgres.json()["event_id"] == str(by_customer[batch_customers[6]].event_id)

        results = await api.client.get(f"/api/v1/predict/batch/{task_id}/results")
        result_ids = [orjson.loads(line)["event_id"] for line in results.text.splitlines()]
        assert sorted(result_ids) == sorted(str(by_customer[c].event_id) for c in batch_customers)

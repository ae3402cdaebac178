"""Reason codes stored and served: a sync prediction and a CSV batch (scorer with STREAMSCORE_REASONS=true)
through the real broker, sink and Postgres, read back by GET /api/v1/predictions and the batch results."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pytest
import redis.asyncio as redis

from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from scorer.app import build_app as build_scorer
from scorer.settings import ScorerSettings
from sink.app import build_app as build_sink
from sink.settings import SinkSettings
from tests.helpers.api import api_settings, batch_csv, dataset_rows, running_api
from tests.helpers.pipeline import fetch

SYNC_COUNT = "SELECT count(*) AS n FROM predictions WHERE source = 'sync'"


@pytest.mark.slow
async def test_reasons_are_stored_and_served_when_the_prediction_carried_them(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str,
    inference_engine: InferenceEngine,
) -> None:
    rows = dataset_rows(12)
    customers = [f"rb{unique_id}-{i}" for i in range(10)]
    sync_customer = f"rs{unique_id}"
    kafka = kafka_settings.model_dump()
    scorer = build_scorer(ScorerSettings(**kafka, reasons=True), engine=inference_engine)
    sink = build_sink(SinkSettings(**kafka, database_url=database_url, redis_url=redis_url))
    async with running_api(api_settings(kafka_settings, database_url, redis_url), inference_engine) as api:
        await scorer.start()
        await sink.start()
        try:
            sync = await api.client.post("/api/v1/predict/single",
                                         json={"customer_id": sync_customer, "features": rows[11]})
            upload = await api.client.post("/api/v1/predict/batch", files={
                "file": ("why.csv", batch_csv(customers, rows[:10]).encode(), "text/csv")})
            task_id = upload.json()["task_id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = (await api.client.get(f"/api/v1/predict/batch/{task_id}")).json()["status"]
                stored = await fetch(database_url, SYNC_COUNT)
                if status == "completed" and stored[0]["n"] == 1:
                    break
                await asyncio.sleep(0.2)
            results = await api.client.get(f"/api/v1/predict/batch/{task_id}/results")
            client = redis.from_url(redis_url)
            try:  # served from Postgres, not the cache
                await client.delete(f"predict:{sync_customer}:{inference_engine.model_version}")
            finally:
                await client.aclose()
            latest = await api.client.get(f"/api/v1/predictions/{sync_customer}")
        finally:
            await sink.stop()
            await scorer.stop()

    assert sync.status_code == 200 and upload.status_code == 202
    expected = inference_engine.reasons(np.array(rows))
    lines = [orjson.loads(line) for line in results.content.splitlines()]
    assert len(lines) == 10
    for line in lines:
        assert line["reasons"] == expected[customers.index(line["customer_id"])]
    assert latest.status_code == 200 and latest.json()["reasons"] == expected[11]
    query = "SELECT reasons FROM predictions WHERE customer_id = $1"
    stored_rows = await fetch(database_url, query, sync_customer)
    assert orjson.loads(stored_rows[0]["reasons"]) == expected[11]

"""Admin shadow routes: set, compare (from the scorers' stats hashes), promote and clear."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import redis.asyncio as redis

from infra.settings import KafkaSettings
from infra.stats import queue_stats_write
from models import data as D
from models.engine import InferenceEngine
from models.registry import Registry
from models.shadow import ShadowComparison, pair_records
from scorer.shadow import stats_fields
from tests.helpers.api import api_settings, running_api
from tests.helpers.faults import PrivateRedis
from tests.helpers.registry import shadow_registry
from tests.helpers.stats import private_db


async def test_shadow_routes_set_compare_promote_and_clear(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, tmp_path: Path, unique_id: str
) -> None:
    registry = shadow_registry(tmp_path / "registry")
    stats_url = private_db(redis_url)
    settings = api_settings(kafka_settings, database_url, stats_url, model_registry=str(registry.root))
    # What a live scorer shadowing v-shadow would write into its stats hash.
    scorer = InferenceEngine.load(registry.root, follow_shadow=True)
    rows = D.load_matrix(D.resolve_data_path())[:400]
    comparison = ShadowComparison()
    comparison.reset("v-active", "v-shadow")
    client = redis.from_url(stats_url)
    key = f"stats:scorer:test-{unique_id}"
    try:
        async with running_api(settings, None) as api:
            reader = await api.key_with("read")
            forbidden = await api.client.post("/api/v1/models/shadow", json={"version": "v-shadow"},
                                              headers=reader)
            unknown = await api.client.post("/api/v1/models/shadow", json={"version": "v-missing"})
            itself = await api.client.post("/api/v1/models/shadow", json={"version": "v-active"})
            nothing = await api.client.post("/api/v1/models/promote")
            set_ = await api.client.post("/api/v1/models/shadow", json={"version": "v-shadow"})
            scorer.refresh()
            shadow_batch = scorer.score_shadow(rows)
            assert shadow_batch is not None
            comparison.add(pair_records(scorer.score(rows).records(), shadow_batch.records()), 4.0, 5.0)
            async with client.pipeline(transaction=False) as pipe:  # as the scorer's stats task writes
                queue_stats_write(pipe, key, stats_fields(comparison), time.time())
                await pipe.execute()
            status = (await api.client.get("/api/v1/models/shadow", headers=reader)).json()
            promoted = await api.client.post("/api/v1/models/promote")
            after = (await api.client.get("/api/v1/models")).json()
            registry.set_shadow("v-active")
            cleared = await api.client.delete("/api/v1/models/shadow")
    finally:
        await client.delete(key)
        await client.aclose()

    assert forbidden.status_code == 403
    assert unknown.status_code == 404
    assert itself.status_code == 409 and nothing.status_code == 409
    assert set_.status_code == 200, set_.text
    assert set_.json()["shadow"] == "v-shadow"
    expected = float(np.mean(scorer.score(rows).segment_label == shadow_batch.segment_label))
    assert status["shadow"] == "v-shadow" and status["rows"] == 400
    assert abs(status["segment_agreement"] - expected) < 1e-6
    assert status["top3_agreement"] == 1.0 and status["added_latency_ms"] == 5.0
    assert [i["instance"] for i in status["instances"]] == [f"test-{unique_id}"]
    assert promoted.status_code == 200 and promoted.json() == {"active": "v-shadow", "previous": "v-active"}
    assert after["active"] == after["serving"] == "v-shadow"
    assert cleared.status_code == 200 and cleared.json()["shadow"] is None
    assert Registry(registry.root).shadow_version() is None


async def test_a_frozen_or_stopped_stats_store_is_a_200_marked_unavailable(
    kafka_settings: KafkaSettings, database_url: str, tmp_path: Path
) -> None:
    registry = shadow_registry(tmp_path / "registry")
    registry.set_shadow("v-shadow")
    server = PrivateRedis().start()
    settings = api_settings(kafka_settings, database_url, server.url, model_registry=str(registry.root))
    try:
        async with running_api(settings, None) as api:
            reader = await api.key_with("read")
            healthy = (await api.client.get("/api/v1/models/shadow", headers=reader)).json()
            answers: dict[str, list[httpx.Response]] = {}
            for fault in (server.freeze, server.stop):
                fault()
                await asyncio.sleep(settings.redis_pause_seconds)  # past any pause from the previous fault
                for path in ("/api/v1/models/shadow", "/api/v1/models/drift", "/api/v1/dashboard/stats"):
                    answers.setdefault(path, []).append(await api.client.get(path, headers=reader))
                if server.process is not None:
                    server.thaw()
    finally:
        if server.process is not None:
            server.thaw()
        server.stop()

    assert healthy["state"] == "no_live_traffic" and healthy["shadow"] == "v-shadow"
    for path, responses in answers.items():
        for response in responses:
            assert response.status_code == 200, (path, response.text)
            body = response.json()
            reports = [body["shadow"], body["drift"]] if path.endswith("/stats") else [body]
            for report in reports:
                assert report["state"] == "unavailable", (path, body)
                assert report["reason"].startswith("scorer stats store unavailable"), (path, body)
            if "threshold" not in reports[0]:  # the shadow comparison still names the versions
                assert reports[0]["shadow"] == "v-shadow" and reports[0]["active"] == "v-active"

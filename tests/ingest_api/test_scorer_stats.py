"""The shadow and drift reports' states, from stats fields written by the scorer's own code."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import redis.asyncio as redis

from infra.settings import KafkaSettings
from infra.stats import queue_stats_write
from ingest_api.console.scorer_stats import drift_report, shadow_status
from models.drift import MIN_ROWS, DriftMonitor
from models.engine import InferenceEngine
from models.registry import PACKAGE_REGISTRY, Registry
from models.shadow import ShadowComparison
from scorer import drift, shadow
from tests.helpers.api import api_settings, running_api
from tests.helpers.drift import SHIFTED, shifted_training_rows
from tests.helpers.stats import MALFORMED_DB, private_db


def _drift_fields(monitor: DriftMonitor) -> dict[str, str]:
    return drift.stats_fields(cast(Any, SimpleNamespace(drift=monitor)))


def test_drift_goes_from_no_traffic_to_warming_up_to_live() -> None:
    registry = Registry(PACKAGE_REGISTRY)
    monitor = DriftMonitor()
    monitor.use(registry.active_version(), registry.manifest())
    assert drift_report(({"a": _drift_fields(monitor)}, None)).state == "no_live_traffic"
    assert drift_report(({}, None)).state == "no_live_traffic"
    monitor.observe(shifted_training_rows(MIN_ROWS - 1))
    early = drift_report(({"a": _drift_fields(monitor)}, None))
    assert early.state == "warming_up" and early.window_rows == MIN_ROWS - 1 and early.flagged == []
    monitor.observe(shifted_training_rows(MIN_ROWS, seed=1))
    live = drift_report(({"a": _drift_fields(monitor)}, None))
    assert live.state == "live" and set(live.flagged) == set(SHIFTED)
    assert drift_report((None, "down")).state == "unavailable"


def test_shadow_states_follow_the_pointer_and_the_scorers() -> None:
    comparison = ShadowComparison()
    idle = {"a": shadow.stats_fields(comparison)}
    assert shadow_status("v1", None, (idle, None)).state == "no_shadow"
    assert shadow_status("v1", "v2", (idle, None)).state == "no_live_traffic"
    comparison.reset("v1", "v2")  # shadowing, nothing scored yet
    waiting = {"a": shadow.stats_fields(comparison)}
    assert shadow_status("v1", "v2", (waiting, None)).state == "no_live_traffic"
    down = shadow_status("v1", "v2", (None, "scorer stats store unavailable: TimeoutError"))
    assert down.state == "unavailable" and down.reason and down.shadow == "v2" and down.rows == 0


async def test_a_malformed_stats_entry_is_reported_unavailable_not_a_500(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine,
    unique_id: str,
) -> None:
    stats_url = private_db(redis_url, MALFORMED_DB)
    client = redis.from_url(stats_url)
    key = f"stats:scorer:broken-{unique_id}"
    broken = {"drift_psi": '{"MOSTYPE": "high"', "drift_window_rows": "inf", "shadow_version": "v-x",
              "shadow_rows": "nan", "shadow_top3_agreement": "not-a-number", "events_in": "1e999",
              "updated_at": "yesterday"}
    try:
        async with client.pipeline(transaction=False) as pipe:
            queue_stats_write(pipe, key, broken, time.time())
            await pipe.execute()
        settings = api_settings(kafka_settings, database_url, stats_url)
        async with running_api(settings, inference_engine) as api:
            reader = await api.key_with("read")
            drift_answer = await api.client.get("/api/v1/models/drift", headers=reader)
            shadow_answer = await api.client.get("/api/v1/models/shadow", headers=reader)
            dashboard = await api.client.get("/api/v1/dashboard/stats", headers=reader)
    finally:
        await client.delete(key)
        await client.aclose()
    assert drift_answer.status_code == 200 and shadow_answer.status_code == 200, drift_answer.text
    assert dashboard.status_code == 200, dashboard.text
    assert drift_answer.json()["unavailable_instances"] == [f"broken-{unique_id}"]
    assert drift_answer.json()["state"] == "no_live_traffic"

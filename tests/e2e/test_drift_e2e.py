"""Drift end to end: a shifted copy of the training data through the real scorer, read back by the API."""

from __future__ import annotations

import redis.asyncio as redis
from prometheus_client import REGISTRY

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from schemas import topics
from schemas.messages import FeatureEvent
from scorer.app import build_app, runtime_of
from tests.helpers.api import api_settings, running_api
from tests.helpers.drift import SHIFTED, shifted_training_rows
from tests.helpers.pipeline import produce, scorer_settings, wait_for
from tests.helpers.stats import private_db


async def test_shifted_traffic_flags_the_shifted_features_only(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str,
    inference_engine: InferenceEngine,
) -> None:
    stats_url = private_db(redis_url)
    rows = shifted_training_rows(2000, seed=1)
    events = [FeatureEvent(customer_id=f"d{unique_id}-{i}", features=tuple(int(v) for v in row))
              for i, row in enumerate(rows)]
    await ensure_topics(kafka_settings)
    await produce(kafka_settings, topic_name(kafka_settings, topics.CUSTOMER_FEATURES),
                  [(e.customer_id.encode(), e.model_dump_json().encode()) for e in events])
    instance = f"drift-{unique_id}"
    settings = scorer_settings(kafka_settings, redis_url=stats_url, stats_interval_seconds=0.2,
                               instance_id=instance)
    app = build_app(settings, engine=inference_engine)
    client = redis.from_url(stats_url)
    await app.start()
    try:
        runtime = runtime_of(app)

        async def reported() -> bool:
            return bool(await client.hget(f"stats:scorer:{instance}", "drift_window_rows") == b"2000")

        await wait_for(reported, within_s=30)
        gauges = {name: REGISTRY.get_sample_value("scorer_feature_psi", {"feature": name})
                  for name in ("PPERSAUT", "MOSTYPE")}
        flagged_gauge = REGISTRY.get_sample_value("scorer_drift_flagged_features")
        api_config = api_settings(kafka_settings, database_url, stats_url)
        async with running_api(api_config, inference_engine) as api:
            response = await api.client.get("/api/v1/models/drift", headers=await api.key_with("read"))
        figures = runtime.drift.figures()
    finally:
        await app.stop()
        await client.delete(f"stats:scorer:{instance}")
        await client.aclose()

    assert set(figures["flagged"]) == set(SHIFTED)
    assert gauges["PPERSAUT"] is not None and gauges["PPERSAUT"] > 0.2
    assert gauges["MOSTYPE"] is not None and gauges["MOSTYPE"] < 0.2
    assert flagged_gauge == len(SHIFTED)
    assert response.status_code == 200, response.text
    report = response.json()
    assert set(report["flagged"]) == set(SHIFTED) and report["threshold"] == 0.2
    assert report["window_rows"] == 2000 and report["model_version"] == inference_engine.model_version
    assert [f["feature"] for f in report["features"][: len(SHIFTED)]] == report["flagged"]
    assert len(report["features"]) == 85
    assert sum(f["flagged"] for f in report["features"]) == len(SHIFTED)

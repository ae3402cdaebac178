"""Scorer with a shadow version: both versions score every batch, the shadow apart (real broker, engines)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from models import data as D
from models.engine import InferenceEngine
from schemas import topics
from schemas.messages import FeatureEvent, Prediction
from scorer.app import build_app, runtime_of
from tests.helpers.pipeline import consume, produce, scorer_settings, wait_for
from tests.helpers.registry import shadow_registry


def training_events(prefix: str, rows: np.ndarray) -> list[FeatureEvent]:
    """One event per training row (realistic traffic, unlike uniform random features)."""
    return [FeatureEvent(customer_id=f"{prefix}-{i}", features=tuple(int(v) for v in row))
            for i, row in enumerate(rows)]


async def test_shadow_scores_every_event_apart_and_promote_swaps_live(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    registry = shadow_registry(tmp_path / "registry")
    registry.set_shadow("v-shadow")
    engine = InferenceEngine.load(registry.root, follow_shadow=True)
    matrix = D.load_matrix(D.resolve_data_path())[:300]
    events = training_events("sh", matrix)
    await ensure_topics(kafka_settings)
    features_topic = topic_name(kafka_settings, topics.CUSTOMER_FEATURES)
    await produce(kafka_settings, features_topic, [(e.customer_id.encode(), e.model_dump_json().encode())
                                                   for e in events])
    app = build_app(scorer_settings(kafka_settings, model_refresh_seconds=0.2), engine=engine)
    await app.start()
    try:
        served = await consume(kafka_settings, topic_name(kafka_settings, topics.PREDICTIONS), len(events))
        shadowed = await consume(kafka_settings, topic_name(kafka_settings, topics.PREDICTIONS_SHADOW),
                                 len(events))
        runtime = runtime_of(app)

        async def compared() -> bool:
            return runtime.shadow.figures()["rows_total"] == len(events)

        await wait_for(compared)
        figures = runtime.shadow.figures()
        gauge = REGISTRY.get_sample_value("scorer_shadow_segment_agreement")
        stats = runtime.stats.snapshot()

        registry.promote()  # as `streamscore models promote` does, from another process

        async def promoted() -> bool:
            return engine.model_version == "v-shadow" and engine.shadow_version is None

        await wait_for(promoted)
        later = training_events("after", matrix[:20])
        await produce(kafka_settings, features_topic, [(e.customer_id.encode(), e.model_dump_json().encode())
                                                       for e in later])
        after = await consume(kafka_settings, topic_name(kafka_settings, topics.PREDICTIONS),
                              len(events) + len(later))
        cleared = runtime.stats.snapshot()
    finally:
        await app.stop()

    active = {p.event_id: p for r in served for p in [Prediction.model_validate_json(r.value)]}
    shadow = {p.event_id: p for r in shadowed for p in [Prediction.model_validate_json(r.value)]}
    assert set(active) == set(shadow) == {e.event_id for e in events}
    assert {p.model_version for p in active.values()} == {"v-active"}
    assert {p.model_version for p in shadow.values()} == {"v-shadow"}
    assert all(r.key == shadow[p].customer_id.encode() for r, p in
               ((r, Prediction.model_validate_json(r.value).event_id) for r in shadowed))
    expected = np.mean([active[e].segment.label == shadow[e].segment.label for e in active])
    assert 0.0 < expected < 1.0
    assert figures["segment_agreement"] == pytest.approx(expected)
    assert figures["top3_agreement"] == 1.0 and figures["propensity_spearman"] == pytest.approx(1.0)
    assert figures["added_latency_ms"] > 0.0
    assert gauge == pytest.approx(expected)
    assert stats["shadow_version"] == "v-shadow" and stats["shadow_rows"] == str(len(events))
    assert float(stats["shadow_segment_agreement"]) == pytest.approx(expected, abs=1e-6)
    later_ids = {e.event_id for e in later}
    after_later = [
        p for r in after for p in [Prediction.model_validate_json(r.value)] if p.event_id in later_ids
    ]
    assert {p.model_version for p in after_later} == {"v-shadow"} and len(after_later) == len(later)
    assert cleared["shadow_version"] == "" and runtime.shadow.rows_total == 0

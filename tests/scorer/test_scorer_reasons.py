"""STREAMSCORE_REASONS: streamed predictions carry the engine's reason codes (real broker and engine)."""

from __future__ import annotations

import numpy as np
import pytest

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from schemas import topics
from schemas.messages import Prediction
from scorer.app import build_app
from scorer.settings import ScorerSettings
from tests.helpers.pipeline import consume, make_events, produce, scorer_settings


@pytest.fixture(scope="module")
def engine() -> InferenceEngine:
    return InferenceEngine.load()


def test_streaming_reasons_are_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMSCORE_REASONS", raising=False)
    assert ScorerSettings().reasons is False
    monkeypatch.setenv("STREAMSCORE_REASONS", "true")
    assert ScorerSettings().reasons is True


async def test_reasons_on_the_stream_when_enabled(
    kafka_settings: KafkaSettings, engine: InferenceEngine
) -> None:
    await ensure_topics(kafka_settings)
    events = make_events(40, "why", seed=5)
    await produce(kafka_settings, topic_name(kafka_settings, topics.CUSTOMER_FEATURES),
                  [(e.customer_id.encode(), e.model_dump_json().encode()) for e in events])
    app = build_app(scorer_settings(kafka_settings, reasons=True), engine=engine)
    await app.start()
    try:
        records = await consume(kafka_settings, topic_name(kafka_settings, topics.PREDICTIONS), len(events))
    finally:
        await app.stop()
    got = {p.event_id: p for r in records for p in [Prediction.model_validate_json(r.value)]}
    expected = engine.reasons(np.array([e.features for e in events]))
    for event, why in zip(events, expected, strict=True):
        assert got[event.event_id].model_dump(mode="json")["reasons"] == why

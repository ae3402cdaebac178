"""Reason codes on the sync routes: /predict/single (and its copy on predictions.v1) and /segment."""

from __future__ import annotations

import numpy as np

from ingest_api.batching import DirectScorer, DynamicBatcher
from models.engine import InferenceEngine
from schemas import topics
from schemas.messages import Prediction
from tests.helpers.api import Api, dataset_rows, read_topic


async def test_predict_single_and_segment_carry_the_engines_reasons(
    api: Api, inference_engine: InferenceEngine, unique_id: str
) -> None:
    features = dataset_rows(5)[4]
    expected = inference_engine.reasons(np.array([features]))[0]

    single = await api.client.post(
        "/api/v1/predict/single", json={"customer_id": f"r{unique_id}", "features": features}
    )
    body = {"customer_id": f"r{unique_id}", "features": features}
    segment = await api.client.post("/api/v1/segment", json=body)
    published = await read_topic(api.settings, topics.PREDICTIONS, expected=1)

    assert single.status_code == 200, single.text
    assert single.json()["reasons"] == expected
    assert expected["propensity_up"] and expected["segment_down"]
    assert Prediction.model_validate_json(published[0].value).model_dump(mode="json")["reasons"] == expected
    assert segment.status_code == 200, segment.text
    assert segment.json()["reasons"] == {"up": expected["segment_up"], "down": expected["segment_down"]}


async def test_failed_reason_codes_are_a_503_on_both_routes(
    api: Api, inference_engine: InferenceEngine, unique_id: str
) -> None:
    def failing_reasons(features: np.ndarray) -> list[dict]:
        raise MemoryError("no room for reason codes")

    batched = api.services.sync_scorer
    body = {"customer_id": f"r{unique_id}", "features": dataset_rows(1)[0]}
    answers = []
    for scorer in (DynamicBatcher(inference_engine.score, failing_reasons, 0.001, 8),
                   DirectScorer(inference_engine.score, failing_reasons)):
        api.services.sync_scorer = scorer
        try:
            for path in ("/api/v1/predict/single", "/api/v1/segment"):
                answers.append(await api.client.post(path, json=body))
        finally:
            api.services.sync_scorer = batched

    assert [a.status_code for a in answers] == [503] * 4
    assert {a.json()["error"]["code"] for a in answers} == {"inference_failed"}
    assert {a.json()["error"]["message"] for a in answers} == {"reason codes failed: MemoryError"}
    assert (await api.client.post("/api/v1/segment", json=body)).status_code == 200

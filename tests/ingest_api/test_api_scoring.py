"""Sync scoring, segment and prediction look-ups on the real engine, broker, Postgres and Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest

from ingest_api.batching import DirectScorer, DynamicBatcher, ReasonCodesFailed
from models.engine import InferenceEngine
from schemas import topics
from schemas.messages import Prediction
from tests.helpers.api import (
    Api,
    dataset_rows,
    prediction_rows,
    read_topic,
    store_predictions,
    without_fast_path,
)


def _expected(engine: InferenceEngine, features: list[int]) -> dict:
    return engine.score(np.asarray([features])).records()[0]


# The DQN's float32 matmul rounds differently with the batch's composition (BLAS blocking), and the
# calibration amplifies it: over 2,000 rows in batches of 1-64 the probabilities moved by at most 1.5e-5.
RECOMMENDATION_NOISE = 1e-4


def _same_scores(got: dict, want: dict) -> bool:
    """Equal products and labels, probabilities equal up to float noise of a different batch."""
    return (
        [r["product_id"] for r in got["recommendations"]]
        == [r["product_id"] for r in want["recommendations"]]
        and [r["probability"] for r in got["recommendations"]]
        == pytest.approx([r["probability"] for r in want["recommendations"]], abs=RECOMMENDATION_NOISE)
        and got["propensity"] == pytest.approx(want["propensity"], abs=1e-9)
        and got["segment"]["label"] == want["segment"]["label"]
        and got["segment"]["score"] == pytest.approx(want["segment"]["score"], abs=1e-9)
    )


async def test_predict_single_scores_in_process_and_publishes(
    api: Api, inference_engine: InferenceEngine, unique_id: str
) -> None:
    features = dataset_rows(3)[2]

    response = await api.client.post(
        "/api/v1/predict/single", json={"customer_id": f"c{unique_id}", "features": features}
    )

    assert response.status_code == 200, response.text
    prediction = Prediction.model_validate(response.json())
    expected = _expected(inference_engine, features)
    assert prediction.source == "sync" and prediction.customer_id == f"c{unique_id}"
    assert prediction.model_version == inference_engine.model_version
    assert _same_scores(prediction.model_dump(), expected)
    assert len({r.product_id for r in prediction.recommendations}) == 3
    records = await read_topic(api.settings, topics.PREDICTIONS, expected=1)
    assert len(records) == 1
    assert records[0].key == f"c{unique_id}".encode()
    assert Prediction.model_validate_json(records[0].value) == prediction


async def test_segment_matches_the_engine(
    api: Api, inference_engine: InferenceEngine, unique_id: str
) -> None:
    features = dataset_rows(5)[4]

    response = await api.client.post(
        "/api/v1/segment", json={"customer_id": f"c{unique_id}", "features": features}
    )

    assert response.status_code == 200, response.text
    expected = _expected(inference_engine, features)["segment"]
    body = response.json()
    body.pop("reasons")  # additive field, checked in test_api_reasons
    assert body == {
        "customer_id": f"c{unique_id}",
        "label": expected["label"],
        "score": body["score"],
        "model_version": inference_engine.model_version,
    }
    assert body["score"] == pytest.approx(expected["score"], abs=1e-9)


async def test_invalid_features_on_sync_routes_name_the_field(api: Api, unique_id: str) -> None:
    features = dataset_rows(1)[0]
    features[0] = 42

    single = await api.client.post(
        "/api/v1/predict/single", json={"customer_id": unique_id, "features": features}
    )
    seg = await api.client.post("/api/v1/segment", json={"customer_id": unique_id, "features": features[:85]})

    assert single.status_code == 422
    assert single.json()["error"]["details"] == [
        {"field": "features[0] (MOSTYPE)", "message": "must be 1–41; got 42"}
    ]
    assert seg.status_code == 422
    assert seg.json()["error"]["details"][0]["field"] == "features"


async def test_latest_prediction_from_redis_then_postgres_then_404(
    api: Api, inference_engine: InferenceEngine, unique_id: str
) -> None:
    cached_customer, stored_customer, unknown = f"r{unique_id}", f"p{unique_id}", f"u{unique_id}"
    rows = prediction_rows(
        inference_engine, [cached_customer, stored_customer, stored_customer], dataset_rows(3)
    )
    rows[1]["scored_at"] = datetime.now(UTC) - timedelta(hours=1)  # older; rows[2] is the latest
    await store_predictions(api.services, rows[1:])
    cached = Prediction.model_validate(
        {
            **{
                k: rows[0][k]
                for k in (
                    "event_id",
                    "customer_id",
                    "model_version",
                    "recommendations",
                    "propensity",
                    "scored_at",
                    "source",
                )
            },
            "segment": {"label": rows[0]["segment_label"], "score": rows[0]["segment_score"]},
        }
    )
    key = f"predict:{cached_customer}:{inference_engine.model_version}"
    await api.services.redis.set(key, cached.model_dump_json(), ex=60)
    try:
        from_redis = await api.client.get(f"/api/v1/predictions/{cached_customer}")
        from_postgres = await api.client.get(f"/api/v1/predictions/{stored_customer}")
        missing = await api.client.get(f"/api/v1/predictions/{unknown}")
        by_post = await api.client.post("/api/v1/predict/single", json={"customer_id": stored_customer})
        by_post_missing = await api.client.post("/api/v1/predict/single", json={"customer_id": unknown})
        bad_id = await api.client.get("/api/v1/predictions/bad%20id")
    finally:
        await api.services.redis.delete(key)

    assert from_redis.status_code == 200
    assert Prediction.model_validate(from_redis.json()) == cached
    assert from_postgres.status_code == 200
    assert from_postgres.json()["event_id"] == str(rows[2]["event_id"])
    assert by_post.status_code == 200 and by_post.json() == from_postgres.json()
    for response in (missing, by_post_missing):
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"no prediction for customer {unknown!r}"
    assert bad_id.status_code == 422
    assert bad_id.json()["error"]["details"][0]["field"] == "customer_id"


async def test_concurrent_sync_requests_share_engine_calls(
    api: Api, inference_engine: InferenceEngine, unique_id: str
) -> None:
    rows = dataset_rows(24)

    responses = await asyncio.gather(
        *(
            api.client.post(
                "/api/v1/predict/single", json={"customer_id": f"c{unique_id}-{i}", "features": row}
            )
            for i, row in enumerate(rows)
        )
    )

    assert all(r.status_code == 200 for r in responses)
    expected = inference_engine.score(np.asarray(rows)).records()
    for response, record in zip(responses, expected, strict=True):
        assert _same_scores(response.json(), record)
    metrics = (await api.client.get("/metrics")).text
    sizes = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line.startswith("streamscore_api_dynamic_batch_size_")
    }
    assert sizes["streamscore_api_dynamic_batch_size_sum"] == 24


async def test_dynamic_batcher_coalesces_within_the_window(inference_engine: InferenceEngine) -> None:
    calls: list[int] = []
    reason_calls: list[int] = []

    def counting_score(features: np.ndarray):
        calls.append(len(features))
        return inference_engine.score(features)

    def counting_reasons(features: np.ndarray):
        reason_calls.append(len(features))
        return inference_engine.reasons(features)

    batcher = DynamicBatcher(counting_score, counting_reasons, window_s=0.002, max_size=8)
    rows = dataset_rows(20)

    results = await asyncio.gather(*(batcher.score(row) for row in rows))

    assert calls == [8, 8, 4]  # two full batches at once, the rest after the window
    assert reason_calls == calls  # reason codes found once per batch, in the same flush
    expected = inference_engine.score(np.asarray(rows)).records()
    assert all(_same_scores(got, want) for got, want in zip(results, expected, strict=True))
    assert [got["reasons"] for got in results] == inference_engine.reasons(np.asarray(rows))


async def test_failed_reason_codes_fail_the_batch(inference_engine: InferenceEngine) -> None:
    def failing_reasons(features: np.ndarray) -> list[dict]:
        raise MemoryError("no room for reason codes")

    batcher = DynamicBatcher(inference_engine.score, failing_reasons, window_s=0.001, max_size=8)
    direct = DirectScorer(inference_engine.score, failing_reasons)
    rows = dataset_rows(3)

    outcomes = await asyncio.gather(*(batcher.score(row) for row in rows), direct.score(rows[0]),
                                    return_exceptions=True)

    failures = [outcome for outcome in outcomes if isinstance(outcome, ReasonCodesFailed)]
    assert len(failures) == len(outcomes) == 4
    assert {str(failure) for failure in failures} == {"MemoryError"}  # the 503 says "reason codes failed: …"
    assert all(isinstance(failure.__cause__, MemoryError) for failure in failures)


async def test_direct_scorer_answers_like_the_batcher(inference_engine: InferenceEngine) -> None:
    row = dataset_rows(1)[0]
    batched = await DynamicBatcher(inference_engine.score, inference_engine.reasons, 0.0, 8).score(row)
    direct = await DirectScorer(inference_engine.score, inference_engine.reasons).score(row)
    assert direct == batched
    assert direct["reasons"] == inference_engine.reasons(np.asarray([row]))[0]


def test_sync_prediction_json_is_what_pydantic_writes(inference_engine: InferenceEngine) -> None:
    from ingest_api.routes.scoring import sync_prediction_json

    for record in inference_engine.score(np.asarray(dataset_rows(50))).records():
        payload = sync_prediction_json(record, "c-1")
        assert Prediction.model_validate_json(payload).model_dump_json().encode() == payload


async def test_fast_path_answers_like_the_fastapi_route(api: Api, unique_id: str) -> None:
    """The pure-ASGI fast path (ingest_api.fast_path) answers exactly as the FastAPI route does."""

    features = dataset_rows(1)[0]
    body = {"customer_id": f"c{unique_id}", "features": features}
    bad_feature = {**body, "features": [42, *features[1:]]}
    cases: list[tuple[dict[str, str], bytes]] = [
        ({"X-API-Key": ""}, orjson.dumps(body)),
        ({"X-API-Key": "ssk_nope"}, orjson.dumps(body)),
        ({"Authorization": "Bearer not-a-token", "X-API-Key": ""}, orjson.dumps(body)),
        ({"Content-Type": "application/json"}, b'{"customer_id": '),
        ({"Content-Type": "text/plain"}, b"x=1"),
        ({}, b""),
        ({}, orjson.dumps({**body, "nope": 1})),
        ({}, orjson.dumps({**body, "customer_id": "bad id"})),
        ({}, orjson.dumps(bad_feature)),
        ({}, orjson.dumps([1, 2])),
        ({"Content-Type": "application/json; charset=utf-8"}, orjson.dumps(body)),
    ]

    async def answers() -> list[tuple[int, object, str | None]]:
        out = []
        for headers, content in cases:
            response = await api.client.post("/api/v1/predict/single", content=content,
                                             headers={"Content-Type": "application/json", **headers})
            payload = response.json()
            if response.status_code == 200:
                payload = sorted(payload)  # fresh event_id and scored_at per call
            out.append((response.status_code, payload, response.headers.get("WWW-Authenticate")))
        return out

    fast = await answers()
    with without_fast_path(api.app):
        slow = await answers()

    assert fast == slow
    assert [status for status, _, _ in fast] == [401, 401, 401, 422, 422, 422, 422, 422, 422, 422, 200]
    assert fast[8][1]["error"]["details"] == [  # type: ignore[index]
        {"field": "features[0] (MOSTYPE)", "message": "must be 1–41; got 42"}
    ]
    metrics = (await api.client.get("/metrics")).text
    assert 'route="/api/v1/predict/single",status="200"' in metrics
    assert 'route="/api/v1/predict/single",status="401"' in metrics


async def test_fast_path_counts_every_outcome_under_its_route(api: Api, unique_id: str) -> None:
    """Each outcome of the fast path is counted once under the route template, never as <unmatched>."""
    body = {"customer_id": f"c{unique_id}", "features": dataset_rows(1)[0]}
    no_predict_scope = await api.key_with("events")
    outcomes = [
        ({}, orjson.dumps(body)),  # 200, scored by the fast path
        ({"X-API-Key": "ssk_nope"}, orjson.dumps(body)),  # 401 from authorize
        (no_predict_scope, orjson.dumps(body)),  # 403: the key lacks the predict scope
        ({}, orjson.dumps({**body, "nope": 1})),  # 422 from the fast path's own validation
        ({}, b'{"customer_id": '),  # 422 from FastAPI, the malformed body replayed to the route
    ]
    statuses = []
    for headers, content in outcomes:
        response = await api.client.post("/api/v1/predict/single", content=content,
                                         headers={"Content-Type": "application/json", **headers})
        statuses.append(response.status_code)
    metrics = (await api.client.get("/metrics")).text

    assert statuses == [200, 401, 403, 422, 422]
    route = 'method="POST",route="/api/v1/predict/single"'
    for status, count in (("200", 1), ("401", 1), ("403", 1), ("422", 2)):
        assert f'streamscore_api_requests_total{{{route},status="{status}"}} {count}.0' in metrics, status
    assert f"streamscore_api_request_duration_seconds_count{{{route}}} 5.0" in metrics
    assert 'method="POST",route="<unmatched>"' not in metrics

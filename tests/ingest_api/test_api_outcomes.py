"""POST /api/v1/outcomes (JSON and CSV) and GET /api/v1/models/performance on the real engines."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from schemas import topics
from schemas.outcomes import Outcome
from tests.helpers.api import Api, read_topic

PAST = "2026-11-01T10:00:00Z"


def _outcome(unique_id: str, i: int, **fields: object) -> dict[str, object]:
    return {"outcome_id": f"o{unique_id}-{i}", "customer_id": f"c{unique_id}-{i}", "product_id": "caravan",
            "occurred_at": PAST, **fields}


async def test_json_and_csv_outcomes_reach_the_topic_keyed_by_customer(api: Api, unique_id: str) -> None:
    one = await api.client.post("/api/v1/outcomes", json=_outcome(unique_id, 0, source="crm"))
    many = await api.client.post("/api/v1/outcomes", json=[_outcome(unique_id, 1), _outcome(unique_id, 2)])
    csv = (f"outcome_id,customer_id,product_id,occurred_at\no{unique_id}-3,c{unique_id}-3,car,{PAST}\n")
    uploaded = await api.client.post("/api/v1/outcomes", content=csv, headers={"Content-Type": "text/csv"})
    assert [r.status_code for r in (one, many, uploaded)] == [202, 202, 202], uploaded.text
    assert uploaded.json() == {"accepted": 1, "outcome_ids": [f"o{unique_id}-3"]}
    records = await read_topic(api.settings, topics.OUTCOMES, expected=4)
    outcomes = [(r.key, Outcome.model_validate_json(r.value)) for r in records]
    assert {o.outcome_id for _, o in outcomes} == {f"o{unique_id}-{i}" for i in range(4)}
    assert all(key == o.customer_id.encode() for key, o in outcomes)


@pytest.mark.parametrize(
    ("change", "field", "part"),
    [
        ({"product_id": "yacht"}, "[1].product_id", "unknown product 'yacht'"),
        ({"occurred_at": (datetime.now(UTC) + timedelta(days=2)).isoformat()}, "[1].occurred_at", "future"),
        ({"occurred_at": "2026-11-01T10:00:00"}, "[1].occurred_at", "timezone"),
        ({"outcome_id": "bad id!"}, "[1].outcome_id", "pattern"),
        ({"customer_id": ""}, "[1].customer_id", "at least 1"),
        ({"colour": "red"}, "[1].colour", "Extra inputs"),
    ],
    ids=["unknown-product", "future", "naive-time", "malformed-id", "empty-customer", "unknown-field"],
)
async def test_bad_outcomes_get_a_422_naming_the_field(
    api: Api, unique_id: str, change: dict[str, object], field: str, part: str
) -> None:
    response = await api.client.post("/api/v1/outcomes", json=[_outcome(unique_id, 0),
                                                              _outcome(unique_id, 1, **change)])
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert details[0]["field"] == field and part in details[0]["message"], details


async def test_csv_errors_name_the_line_and_limits_and_scope_hold(api: Api, unique_id: str) -> None:
    csv = f"outcome_id,customer_id,product_id,occurred_at\no{unique_id},c{unique_id},yacht,{PAST}\n"
    bad_row = await api.client.post("/api/v1/outcomes", content=csv, headers={"Content-Type": "text/csv"})
    assert bad_row.status_code == 422
    assert bad_row.json()["error"]["details"][0]["field"] == "line 2.product_id"
    no_column = await api.client.post("/api/v1/outcomes", content="outcome_id,customer_id\na,b\n",
                                      headers={"Content-Type": "text/csv"})
    assert no_column.status_code == 422
    assert {d["message"] for d in no_column.json()["error"]["details"]} == {
        "missing column occurred_at", "missing column product_id"}
    huge = "outcome_id,customer_id,product_id,occurred_at\n\"" + "x" * 200_000 + "\n"
    unreadable = await api.client.post("/api/v1/outcomes", content=huge, headers={"Content-Type": "text/csv"})
    assert unreadable.status_code == 422 and unreadable.json()["error"]["details"][0]["field"] == "line 2"
    limit = api.settings.max_events_per_request
    too_many = await api.client.post("/api/v1/outcomes",
                                     json=[_outcome(unique_id, i) for i in range(limit + 1)])
    assert too_many.status_code == 413 and too_many.json()["error"]["details"][0]["field"] == "body"
    reader = await api.key_with("read")
    refused = await api.client.post("/api/v1/outcomes", json=_outcome(unique_id, 0), headers=reader)
    assert refused.status_code == 403
    allowed = await api.client.post("/api/v1/outcomes", json=_outcome(unique_id, 0),
                                    headers=await api.key_with("events"))
    assert allowed.status_code == 202


async def test_quality_gauges_are_on_metrics_and_ready_stays_up(api: Api) -> None:
    version = api.services.engine.model_version
    for _ in range(100):  # the monitor's first round runs at start-up
        text = (await api.client.get("/metrics")).text
        if f'streamscore_model_quality_alert{{version="{version}"}} 0.0' in text:
            break
        await asyncio.sleep(0.1)
    assert f'streamscore_model_quality{{figure="labelled",version="{version}"}} 0.0' in text
    assert (await api.client.get("/ready")).status_code == 200


async def test_performance_answers_the_contract_and_rejects_bad_windows(api: Api) -> None:
    response = await api.client.get("/api/v1/models/performance")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == api.services.engine.model_version
    for key in ("labelled", "pending", "unmatched"):
        assert body[key] == 0
    assert set(body["propensity"]) >= {"auc", "top20_buyers", "lift", "ece", "reliability"}
    assert len(body["propensity"]["reliability"]) == 10
    assert "hr3" in body["recommender"] and "auc" in body["estimated"] and body["estimated"]["caveat"]
    naive = await api.client.get("/api/v1/models/performance", params={"since": "2026-01-01T00:00:00"})
    assert naive.status_code == 422 and naive.json()["error"]["details"][0]["field"] == "since"
    backwards = await api.client.get("/api/v1/models/performance", params={
        "since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"})
    assert backwards.status_code == 422
    ancient = await api.client.get("/api/v1/models/performance", params={"until": "0001-01-02T00:00:00Z"})
    assert ancient.status_code == 422 and ancient.json()["error"]["details"][0]["field"] == "until"
    bad_version = await api.client.get("/api/v1/models/performance", params={"version": "../x"})
    assert bad_version.status_code == 422

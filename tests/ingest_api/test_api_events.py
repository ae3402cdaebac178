"""POST /api/v1/events against the real broker: acks before 202, all-or-nothing validation, limits, auth."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from infra.settings import KafkaSettings
from schemas import topics
from schemas.features import FEATURE_NAMES
from schemas.messages import FeatureEvent
from tests.helpers.api import Api, api_settings, dataset_rows, read_topic, running_api, topic_size


async def test_single_and_array_events_reach_the_topic(api: Api, unique_id: str) -> None:
    rows = dataset_rows(4)
    given_id = uuid.uuid4()
    single = {"customer_id": f"c{unique_id}-0", "features": rows[0], "event_id": str(given_id)}
    by_name = {name: value for name, value in zip(FEATURE_NAMES, rows[3], strict=True) if name != "CARAVAN"}
    array: list[dict[str, object]] = [
        {"customer_id": f"c{unique_id}-{i}", "features": rows[i]} for i in (1, 2)
    ]
    array.append(
        {"customer_id": f"c{unique_id}-3", "features": by_name, "occurred_at": "2025-01-02T03:04:05Z"}
    )

    first = await api.client.post("/api/v1/events", json=single)
    second = await api.client.post("/api/v1/events", json=array)

    assert first.status_code == 202, first.text
    assert first.json()["accepted"] == 1
    assert first.json()["event_ids"] == [str(given_id)]
    assert second.status_code == 202, second.text
    assert second.json()["accepted"] == 3
    records = await read_topic(api.settings, topics.CUSTOMER_FEATURES, expected=4)
    events = {
        str(e.event_id): (r.key, e) for r in records for e in [FeatureEvent.model_validate_json(r.value)]
    }
    assert set(events) == {str(given_id), *second.json()["event_ids"]}
    for key, event in events.values():
        assert key == event.customer_id.encode()
        assert event.source == "event"
    sent = {f"c{unique_id}-{i}": rows[i] for i in range(4)}
    sent[f"c{unique_id}-3"] = [*rows[3][:85], 0]  # CARAVAN omitted by name counts as 0
    assert {e.customer_id: list(e.features) for _, e in events.values()} == sent
    dated = next(e for _, e in events.values() if e.customer_id == f"c{unique_id}-3")
    assert dated.occurred_at.isoformat() == "2025-01-02T03:04:05+00:00"


def _error(response_json: dict) -> tuple[str, list[dict[str, str]]]:
    error = response_json["error"]
    assert error["status"] == 422 and error["code"] in {"validation_error", "invalid_json"}
    return error["message"], error["details"]


@pytest.mark.parametrize(
    ("mutate", "field", "message_part"),
    [
        (lambda f: f[:85], "[1].features", "exactly 86 values in columns.csv order; got 85"),
        (lambda f: [*f, 1], "[1].features", "exactly 86 values in columns.csv order; got 87"),
        (lambda f: [*f[:3], 9, *f[4:]], "[1].features[3] (MGEMLEEF)", "must be 1–6; got 9"),
        (lambda f: [*f[:64], 13, *f[65:]], "[1].features[64] (AWAPART)", "must be 0–12; got 13"),
        (lambda f: [*f[:10], 2.5, *f[11:]], "[1].features[10] (MRELSA)", "must be 0–9; got 2.5"),
        (lambda f: [*f[:10], "3", *f[11:]], "[1].features[10] (MRELSA)", "not an integer"),
        (lambda f: {"FOO": 1, **dict(zip(FEATURE_NAMES, f, strict=True))}, "[1].features", "unknown column"),
        (
            lambda f: dict(zip(FEATURE_NAMES[1:], f[1:], strict=True)),
            "[1].features",
            "missing column(s): MOSTYPE",
        ),
    ],
    ids=[
        "85-values",
        "87-values",
        "age-band-9",
        "count-13",
        "float",
        "string",
        "unknown-name",
        "missing-name",
    ],
)
async def test_invalid_item_rejects_the_whole_request(
    api: Api, unique_id: str, mutate, field: str, message_part: str
) -> None:
    rows = dataset_rows(2)
    body = [
        {"customer_id": f"c{unique_id}-0", "features": rows[0]},
        {"customer_id": f"c{unique_id}-1", "features": mutate(list(rows[1]))},
    ]

    response = await api.client.post("/api/v1/events", json=body)

    assert response.status_code == 422, response.text
    message, details = _error(response.json())
    assert details[0]["field"] == field
    assert message_part in details[0]["message"]
    assert field in message
    assert await topic_size(api.settings, topics.CUSTOMER_FEATURES) == 0


async def test_nan_is_named_with_its_field_and_range(api: Api, unique_id: str) -> None:
    values = [str(v) for v in dataset_rows(1)[0]]
    values[3] = "NaN"
    raw = '{{"customer_id": "c{}", "features": [{}]}}'.format(unique_id, ",".join(values))

    response = await api.client.post(
        "/api/v1/events", content=raw, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    _, details = _error(response.json())
    assert details == [
        {"field": "features[3] (MGEMLEEF)", "message": "must be 1–6; got nan, which is not an integer"}
    ]


@pytest.mark.parametrize(
    ("body", "field", "message_part"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[]", None, "empty"),
        (b'"text"', None, "one event object or an array"),
        (b'{"customer_id": "bad id!", "features": []}', "customer_id", "String should match pattern"),
        (b'{"customer_id": "c1"}', "features", "Field required"),
        (b'{"customer_id": "c1", "features": [], "batch_id": "x"}', "batch_id", "Extra inputs"),
    ],
    ids=["malformed", "empty-array", "string", "customer-id", "no-features", "extra-field"],
)
async def test_malformed_bodies_get_a_clear_422(
    api: Api,
    body: bytes,
    field: str | None,
    message_part: str,
) -> None:
    response = await api.client.post(
        "/api/v1/events", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    text = error["message"] + " ".join(d["message"] for d in error["details"])
    assert message_part in text
    if field is not None:
        assert any(d["field"] == field for d in error["details"])


@pytest.fixture
async def small_api(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine
) -> AsyncIterator[Api]:
    settings = api_settings(
        kafka_settings, database_url, redis_url, max_events_per_request=5, max_json_bytes=64 * 1024
    )
    async with running_api(settings, inference_engine) as running:
        yield running


async def test_too_many_events_is_413_and_nothing_is_published(small_api: Api, unique_id: str) -> None:
    rows = dataset_rows(6)
    body = [{"customer_id": f"c{unique_id}-{i}", "features": row} for i, row in enumerate(rows)]

    response = await small_api.client.post("/api/v1/events", json=body)

    assert response.status_code == 413
    assert response.json()["error"]["message"] == "too many events: 6 in one request; the limit is 5"
    assert await topic_size(small_api.settings, topics.CUSTOMER_FEATURES) == 0


async def test_oversized_body_is_413_by_length_and_by_counting(small_api: Api) -> None:
    big = b"[" + b" " * (70 * 1024) + b"]"

    declared = await small_api.client.post(
        "/api/v1/events", content=big, headers={"Content-Type": "application/json"}
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    streamed = await small_api.client.post(
        "/api/v1/events", content=chunks(), headers={"Content-Type": "application/json"}
    )

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert str(64 * 1024) in response.json()["error"]["message"]


async def test_credentials_and_scope_are_required(api: Api, unique_id: str) -> None:
    body = orjson.dumps({"customer_id": f"c{unique_id}", "features": dataset_rows(1)[0]})
    read_only = await api.key_with("read")

    anonymous = await api.client.post("/api/v1/events", content=body, headers={"X-API-Key": ""})
    wrong_scope = await api.client.post("/api/v1/events", content=body, headers=read_only)
    events_scope = await api.client.post("/api/v1/events", content=body, headers=await api.key_with("events"))

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert "WWW-Authenticate" in anonymous.headers
    assert wrong_scope.status_code == 403
    assert wrong_scope.json()["error"] == {
        "status": 403,
        "code": "forbidden",
        "message": "missing scope 'events'",
        "details": [],
    }
    assert events_scope.status_code == 202

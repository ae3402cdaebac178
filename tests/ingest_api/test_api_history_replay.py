"""Decision history (features for admins only) and the replay routes, on the real engines."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from schemas import topics
from schemas.features import FEATURE_NAMES
from schemas.messages import Prediction
from tests.helpers.api import Api, dataset_rows, read_topic
from tests.helpers.feature_log import serve


async def test_history_lists_decisions_newest_first_with_features_for_admins_only(
    api: Api, unique_id: str
) -> None:
    customer = f"h{unique_id}"
    rows = dataset_rows(3)
    for k, row in enumerate(rows):  # three decisions of one customer, oldest first
        await serve(api.services.sessionmaker, api.services.engine, [customer], [row], seed=k)

    admin = await api.client.get(f"/api/v1/predictions/{customer}", params={"history": 2})
    reader = await api.client.get(f"/api/v1/predictions/{customer}", params={"history": 5},
                                  headers=await api.key_with("read"))
    latest = await api.client.get(f"/api/v1/predictions/{customer}", headers=await api.key_with("read"))
    missing = await api.client.get(f"/api/v1/predictions/x{unique_id}", params={"history": 3})
    bad = await api.client.get(f"/api/v1/predictions/{customer}", params={"history": 0})

    assert admin.status_code == 200, admin.text
    body = admin.json()
    assert body["features_included"] is True and len(body["decisions"]) == 2
    assert [list(d["features"].values()) for d in body["decisions"]] == [rows[2], rows[1]]
    assert list(body["decisions"][0]["features"]) == list(FEATURE_NAMES)
    first = body["decisions"][0]
    assert set(first) >= {"model_version", "recommendations", "propensity", "segment", "reasons", "scored_at"}
    assert reader.status_code == 200, reader.text
    decisions = reader.json()["decisions"]
    assert reader.json()["features_included"] is False and len(decisions) == 3
    assert all(d["features"] is None for d in decisions)
    assert [d["event_id"] for d in decisions[:2]] == [d["event_id"] for d in body["decisions"]]
    # without ?history the route still answers the Prediction contract, the newest decision
    assert str(Prediction.model_validate(latest.json()).event_id) == first["event_id"]
    assert missing.status_code == 404 and bad.status_code == 422


async def test_replay_route_is_admin_only_and_publishes_to_the_replay_topic(api: Api, unique_id: str) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    customers = [f"p{unique_id}-{i}" for i in range(300)]
    await serve(api.services.sessionmaker, api.services.engine, customers, dataset_rows(300), largest=120)
    window = {"version": api.services.engine.model_version, "since": since.isoformat(),
              "until": datetime.now(UTC).isoformat()}

    refused = await api.client.post("/api/v1/replays", json=window, headers=await api.key_with("read"))
    unknown = await api.client.post("/api/v1/replays", json={**window, "version": "v-none"})
    backwards = await api.client.post("/api/v1/replays", json={**window, "until": window["since"]})
    started = await api.client.post("/api/v1/replays", json=window)
    assert (refused.status_code, unknown.status_code, backwards.status_code) == (403, 422, 422)
    assert started.status_code == 202, started.text
    replay_id = started.json()["replay_id"]
    status: dict = {}
    for _ in range(200):
        status = (await api.client.get(f"/api/v1/replays/{replay_id}")).json()
        if status["status"] != "running":
            break
        await asyncio.sleep(0.1)

    assert status["status"] == "completed", status
    assert status["rows"] == 300 and status["exact_agreement"] == 1.0 and status["top3_agreement"] == 1.0
    published = await read_topic(api.settings, topics.PREDICTIONS_REPLAY, expected=300)
    assert sorted(r.key.decode() for r in published) == sorted(customers)
    assert {Prediction.model_validate_json(r.value).model_version for r in published} == {window["version"]}
    forbidden = await api.client.get(f"/api/v1/replays/{replay_id}", headers=await api.key_with("read"))
    assert forbidden.status_code == 403

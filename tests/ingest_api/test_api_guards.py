"""The running app's guards: no body read before authentication, the `read` scope on stored reads,
browser hardening headers, host-free redirects, and a database outage named as such."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest

from infra.database import create_engine, create_sessionmaker
from infra.settings import KafkaSettings
from ingest_api.settings import ApiSettings
from models.engine import InferenceEngine
from schemas.features import FEATURE_NAMES
from streamscore.embedded import free_port
from tests.helpers.api import Api, api_settings, batch_csv, dataset_rows, running_api, without_fast_path

FEATURES = dataset_rows(1)[0]


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/predict/single", "/api/v1/segment",
                                  "/api/v1/predict/batch", "/api/v1/models/v1/activate"])
async def test_no_body_byte_is_read_before_the_headers_authenticate(api: Api, path: str) -> None:
    reads = 0
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json"), (b"host", b"api.test")],
             "client": ("10.1.1.1", 5), "server": ("api.test", 80)}
    await api.app(scope, receive, send)
    assert sent[0]["status"] == 401
    assert reads == 0


async def test_a_predict_only_key_cannot_read_stored_predictions(api: Api) -> None:
    predict_only = await api.key_with("predict")
    predict_read = await api.key_with("predict", "read")

    async def answers() -> list[int]:
        return [
            (await api.client.post("/api/v1/predict/single", headers=headers, json=body)).status_code
            for headers, body in (
                (predict_only, {"customer_id": "c-nobody"}),
                (predict_only, {"customer_id": "c-1", "features": FEATURES}),
                (predict_read, {"customer_id": "c-nobody"}),
            )
        ]

    fast = await answers()
    with without_fast_path(api.app):
        slow = await answers()
    assert fast == slow == [403, 200, 404]


async def test_responses_carry_the_hardening_headers(api: Api) -> None:
    for path in ("/health", "/docs", "/api/v1/models", "/nowhere"):
        response = await api.client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
        assert response.headers["referrer-policy"] == "no-referrer", path


async def test_a_redirect_never_names_the_requested_host(api: Api) -> None:
    response = await api.client.get("/api/v1/models/", headers={"Host": "evil.example"})
    assert response.status_code == 307
    assert response.headers["location"] == "/api/v1/models"
    followed = await api.client.get(response.headers["location"])
    assert followed.status_code == 200


@contextlib.asynccontextmanager
async def database_down(api: Api) -> AsyncIterator[None]:
    """Every session of the app, the routes' and authentication's, goes to a port where nothing listens."""
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x"
    dead = create_engine(ApiSettings(database_url=nowhere))
    security, live = api.app.state.security, api.services.sessionmaker
    api.services.sessionmaker = security.sessionmaker = create_sessionmaker(dead)
    try:
        yield
    finally:
        api.services.sessionmaker = security.sessionmaker = live
        await dead.dispose()


async def test_events_keep_flowing_with_a_recent_key_through_a_database_outage(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine
) -> None:
    settings = api_settings(kafka_settings, database_url, redis_url, key_cache_ttl_s=0.2,
                            auth_outage_grace_s=2.0)
    async with running_api(settings, inference_engine) as api:
        headers = await api.key_with("events")
        event = {"customer_id": "c-outage", "features": FEATURES}
        assert (await api.client.post("/api/v1/events", headers=headers, json=event)).status_code == 202
        async with database_down(api):
            await asyncio.sleep(0.3)  # past the key cache: only the outage grace can serve it now
            during = await api.client.post("/api/v1/events", headers=headers, json=event)
            await asyncio.sleep(2.0)
            after = await api.client.post("/api/v1/events", headers=headers, json=event)
    assert during.status_code == 202, during.text
    assert after.status_code == 503


async def test_a_csv_upload_with_postgres_down_names_the_database(api: Api) -> None:
    assert (await api.client.get("/api/v1/models")).status_code == 200  # the admin key is now cached
    async with database_down(api):
        response = await api.client.post("/api/v1/predict/batch", content=batch_csv(["c-1"], [FEATURES]),
                                         headers={"Content-Type": "text/csv"})
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "database_unavailable"
    assert "database is unavailable" in error["message"] and "broker" not in error["message"]
    assert response.headers["retry-after"] == "1"


# --- messages that used to repeat or mislead (issue 13, item 7) ---------------------------------


async def test_a_semicolon_csv_gets_one_delimiter_hint(api: Api) -> None:
    body = ";".join(["customer_id", *FEATURE_NAMES]) + "\n" + ";".join(["c-1", *map(str, FEATURES)]) + "\n"
    response = await api.client.post("/api/v1/predict/batch", content=body,
                                     headers={"Content-Type": "text/csv"})
    error = response.json()["error"]
    assert response.status_code == 422 and error["code"] == "invalid_csv_header"
    assert "semicolon-separated" in error["message"]
    assert "MOSTYPE" not in error["message"] and len(error["details"]) == 1


async def test_an_invalid_header_is_said_once(api: Api) -> None:
    header = ["customer_id", *FEATURE_NAMES[1:], "EXTRA"]
    body = ",".join(header) + "\n"
    response = await api.client.post("/api/v1/predict/batch", content=body,
                                     headers={"Content-Type": "text/csv"})
    error = response.json()["error"]
    assert [d["message"] for d in error["details"]] == ["unknown column(s): EXTRA",
                                                       "missing column(s): MOSTYPE"]
    assert error["message"] == "the CSV header is invalid: unknown column(s): EXTRA (and 1 more problem(s))"


async def test_a_filename_with_control_characters_is_stored_clean(api: Api) -> None:
    body = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="bad\x00na\x1bme.csv"\r\n'
            b"Content-Type: text/csv\r\n\r\n" + batch_csv(["c-1"], [FEATURES]).encode() + b"\r\n--xyz--\r\n")
    response = await api.client.post("/api/v1/predict/batch", content=body,
                                     headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 202, response.text
    status = await api.client.get(f"/api/v1/predict/batch/{response.json()['task_id']}")
    assert status.json()["filename"] == "badname.csv"


async def test_a_body_without_content_type_says_what_was_expected(api: Api) -> None:
    body = b'{"customer_id": "c-1", "features": [1]}'
    for path in ("/api/v1/segment", "/api/v1/predict/single"):
        response = await api.client.post(path, content=body, headers={"Content-Type": "text/plain"})
        assert response.status_code == 422, response.text
        assert "Content-Type: application/json" in response.json()["error"]["message"], path


async def test_malformed_json_gives_line_and_column(api: Api) -> None:
    body = b'{\n  "customer_id": "c-1",\n  "features": [1, 2,]\n}'
    for path in ("/api/v1/segment", "/api/v1/predict/single"):
        response = await api.client.post(path, content=body, headers={"Content-Type": "application/json"})
        error = response.json()["error"]
        assert response.status_code == 422, response.text
        assert "line 3 column" in error["message"], error
        assert error["details"][0]["field"] == "body"


async def test_headers_and_redirects_on_a_plain_client(api: Api) -> None:
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://elsewhere.example") as client:
        response = await client.get("/api/v1/models/")
    assert "elsewhere.example" not in response.headers.get("location", "")

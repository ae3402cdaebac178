"""Security on the real app (create_app + lifespan): every route is protected, roles and limits apply."""

from __future__ import annotations

import re
import uuid

import httpx

from infra.settings import KafkaSettings
from ingest_api.auth.credentials import create_user
from models.engine import InferenceEngine
from tests.helpers.api import Api, api_settings, running_api
from tests.helpers.security import PASSWORD, wait_for_fresh_window

PUBLIC_PATHS = {"/health", "/ready", "/asyncapi", "/api/v1/auth/token"}  # public by design


def concrete(path: str) -> str:
    """A callable URL for an OpenAPI path template (placeholders filled with plausible values)."""
    return re.sub(r"\{[^}]+\}", lambda m: str(uuid.uuid4()) if "id" in m.group(0) else "x", path)


async def test_every_non_public_route_declares_and_enforces_auth(api: Api) -> None:
    schema = api.app.openapi()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://api.test")
    checked = 0
    async with anonymous:
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                if path in PUBLIC_PATHS:
                    continue
                assert {"APIKeyHeader": []} in operation.get("security", []), (method, path)
                response = await anonymous.request(method.upper(), concrete(path))
                assert response.status_code == 401, (method, path, response.text)
                assert response.json()["error"]["code"] == "unauthorized"
                checked += 1
    assert checked >= 8


async def test_reader_user_reads_but_cannot_score_or_admin(api: Api) -> None:
    username = f"reader-{uuid.uuid4().hex[:8]}"
    async with api.services.sessionmaker() as session:
        await create_user(session, username, PASSWORD, "reader")
        await session.commit()
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://api.test")
    async with anonymous:
        token = await anonymous.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert (await anonymous.get("/api/v1/models", headers=headers)).status_code == 200
        scoring = await anonymous.post("/api/v1/predict/single", headers=headers, json={})
        assert scoring.status_code == 403
        version = api.services.engine.model_version
        activate = await anonymous.post(f"/api/v1/models/{version}/activate", headers=headers)
        assert activate.status_code == 403
        wrong = await anonymous.post(
            "/api/v1/auth/token", data={"username": username, "password": "nope-nope"}
        )
        assert wrong.status_code == 401


async def test_rate_limit_on_the_real_app(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine
) -> None:
    settings = api_settings(kafka_settings, database_url, redis_url, rate_limit=3)
    async with running_api(settings, inference_engine) as api:
        headers = await api.key_with("read")
        await wait_for_fresh_window()
        statuses = [(await api.client.get("/api/v1/models", headers=headers)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = await api.client.get("/api/v1/models", headers=headers)
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1

"""Operational surface of the API: health, readiness, metrics, error shape, OpenAPI, CORS and models."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from infra.settings import KafkaSettings
from ingest_api.auth.tokens import issue_token
from ingest_api.errors import ApiError
from ingest_api.main import create_app
from models.engine import InferenceEngine
from models.registry import Registry
from streamscore.embedded import free_port
from tests.helpers.api import Api, api_settings, running_api

ERROR_KEYS = {"status", "code", "message", "details"}
API_ROUTES = [
    ("post", "/api/v1/events"),
    ("post", "/api/v1/predict/batch"),
    ("get", "/api/v1/predict/batch/{task_id}"),
    ("get", "/api/v1/predict/batch/{task_id}/results"),
    ("get", "/api/v1/predictions/{customer_id}"),
    ("post", "/api/v1/predict/single"),
    ("post", "/api/v1/segment"),
    ("get", "/api/v1/models"),
    ("get", "/api/v1/models/metrics"),
    ("post", "/api/v1/models/{version}/activate"),
    ("get", "/api/v1/models/shadow"),
    ("post", "/api/v1/models/shadow"),
    ("delete", "/api/v1/models/shadow"),
    ("post", "/api/v1/models/promote"),
    ("get", "/api/v1/models/drift"),
    ("post", "/api/v1/replays"),
    ("get", "/api/v1/replays/{replay_id}"),
]


async def test_health_and_ready_need_no_credentials_and_metrics_a_token_or_read(api: Api) -> None:
    anonymous = {"X-API-Key": ""}
    token = "scraper-" + "t" * 32
    api.settings.metrics_token = SecretStr(token)

    health = await api.client.get("/health", headers=anonymous)
    ready = await api.client.get("/ready", headers=anonymous)
    await api.client.get("/api/v1/predictions/nobody-here")
    refused = await api.client.get("/metrics", headers=anonymous)
    wrong_token = await api.client.get("/metrics", headers={**anonymous, "Authorization": "Bearer nope"})
    no_read = await api.client.get("/metrics", headers=await api.key_with("events"))
    scraper = {**anonymous, "Authorization": f"Bearer {token}"}
    metrics = await api.client.get("/metrics", headers=scraper)
    with_read = await api.client.get("/metrics", headers=await api.key_with("read"))

    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert {name for name, dep in body["dependencies"].items() if dep["ok"]} == {
        "broker",
        "topics",
        "database",
        "redis",
    }
    assert all(set(dep) <= {"ok", "latency_ms", "error"} and dep.get("error") is None
               for dep in body["dependencies"].values())  # anonymous: flags only
    assert refused.status_code == 401 and wrong_token.status_code == 401 and no_read.status_code == 403
    assert metrics.status_code == 200 and with_read.status_code == 200
    route = "/api/v1/predictions/{customer_id}"
    assert f'streamscore_api_requests_total{{method="GET",route="{route}",status="404"}} 1.0' in metrics.text
    assert 'streamscore_api_request_duration_seconds_count{method="GET",route="/ready"} 1.0' in metrics.text


async def test_ready_is_503_naming_the_dependency_that_is_down(
    kafka_settings: KafkaSettings, database_url: str, inference_engine: InferenceEngine
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = api_settings(kafka_settings, database_url, dead_redis)
    async with running_api(settings, inference_engine) as api:
        response = await api.client.get("/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["dependencies"]["redis"]["ok"] is False
    assert "Connection" in body["dependencies"]["redis"]["error"]
    assert body["dependencies"]["database"]["ok"] and body["dependencies"]["broker"]["ok"]


async def test_ready_gives_redis_the_readiness_deadline_not_the_budget_of_a_read(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine
) -> None:
    settings = api_settings(kafka_settings, database_url, redis_url, redis_timeout_seconds=1e-6)
    async with running_api(settings, inference_engine) as api:
        with pytest.raises(Exception, match="Timeout"):  # a read's budget: no Redis call fits in it
            await api.services.redis.ping()
        response = await api.client.get("/ready")

    assert response.status_code == 200, response.text
    assert response.json()["dependencies"]["redis"]["ok"] is True


async def test_random_keys_on_ready_from_one_client_hide_nothing_from_another(api: Api) -> None:
    def client_from(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=api.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://api.test")

    async with client_from("10.9.0.1") as guesser, client_from("10.9.0.2") as monitor:
        for _ in range(125):  # past the 120 failed key lookups per address and minute
            await guesser.get("/ready", headers={"X-API-Key": "ssk_" + uuid.uuid4().hex + "x" * 11})
        fresh_key = await api.key_with("read")  # not yet cached: it needs a lookup
        seen = (await monitor.get("/ready", headers=fresh_key)).json()
    assert all("latency_ms" in dep and dep["latency_ms"] is not None for dep in seen["dependencies"].values())


async def test_every_error_has_the_one_shape(api: Api) -> None:
    @api.app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @api.app.get("/teapot")
    async def teapot() -> None:
        raise ApiError(409, "custom conflict", code="conflict")

    not_found = await api.client.get("/api/v1/nothing-here")
    not_allowed = await api.client.delete("/api/v1/events")
    crashed = await api.client.get("/boom")
    custom = await api.client.get("/teapot")

    assert not_found.status_code == 404 and not_found.json()["error"]["code"] == "not_found"
    assert not_allowed.status_code == 405 and not_allowed.json()["error"]["code"] == "method_not_allowed"
    assert crashed.status_code == 500
    assert crashed.json() == {
        "error": {
            "status": 500,
            "code": "internal_error",
            "message": "internal error; it has been logged",
            "details": [],
        }
    }
    assert "secret" not in crashed.text and "Traceback" not in crashed.text
    assert custom.json()["error"]["message"] == "custom conflict"
    for response in (not_found, not_allowed, crashed, custom):
        assert set(response.json()["error"]) == ERROR_KEYS
        assert response.headers["content-type"] == "application/json"


async def test_openapi_documents_every_route_security_and_errors(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    docs = await api.client.get("/docs")

    assert response.status_code == 200 and docs.status_code == 200
    spec = response.json()
    schemes = spec["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"oauth2", "apiKey"}
    assert "ErrorResponse" in spec["components"]["schemas"]
    ours = [(path, method, spec["paths"][path][method]) for method, path in API_ROUTES]
    for path, method, op in ours:
        where = f"{method.upper()} {path}"
        assert op.get("summary") and op.get("description"), where
        assert op.get("security"), where
        for status in ("401", "403", "429"):
            ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorResponse"), where
        success = next(code for code in op["responses"] if code.startswith("2"))
        assert op["responses"][success].get("content"), where
    events = spec["paths"]["/api/v1/events"]["post"]
    assert events["requestBody"]["content"]["application/json"]["examples"]
    assert "413" in events["responses"] and "422" in events["responses"]
    upload = spec["paths"]["/api/v1/predict/batch"]["post"]["requestBody"]["content"]
    assert set(upload) == {"multipart/form-data", "text/csv"}


async def test_cors_allows_only_the_configured_origins(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine
) -> None:
    settings = api_settings(kafka_settings, database_url, redis_url, cors_origins=["https://app.example"])
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-API-Key"}
    async with running_api(settings, inference_engine) as api:
        allowed = await api.client.options(
            "/api/v1/events", headers={"Origin": "https://app.example", **preflight}
        )
        denied = await api.client.options(
            "/api/v1/events", headers={"Origin": "https://evil.example", **preflight}
        )

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in denied.headers


async def test_models_list_and_metrics_of_the_active_version(
    api: Api, inference_engine: InferenceEngine
) -> None:
    listed = await api.client.get("/api/v1/models")
    metrics = await api.client.get("/api/v1/models/metrics")

    assert listed.status_code == 200
    body = listed.json()
    assert body["serving"] == inference_engine.model_version
    assert body["active"] in body["versions"]
    assert metrics.status_code == 200
    manifest = inference_engine.registry.manifest(inference_engine.model_version)
    propensity = manifest["metrics"]["propensity"]
    result = metrics.json()
    assert result["model_version"] == inference_engine.model_version
    for name in ("accuracy", "precision", "recall", "f1", "auc", "top20_buyers"):
        assert result[name] == pytest.approx(propensity[name])
    assert result["hr_at_3"] == pytest.approx(manifest["metrics"]["recommender"]["dqn"]["hr3"])
    assert result["spearman"] == pytest.approx(manifest["metrics"]["value"]["spearman"])


async def test_activate_switches_this_process_and_moves_the_pointer(
    kafka_settings: KafkaSettings,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    inference_engine: InferenceEngine,
) -> None:
    source = inference_engine.registry
    version = inference_engine.model_version
    registry_dir = tmp_path / "registry"
    registry_dir.mkdir()
    shutil.copytree(source.path(version), registry_dir / version)
    shutil.copytree(source.path(version), registry_dir / "v-copy")
    manifest = (registry_dir / "v-copy" / "manifest.json").read_text().replace(f'"{version}"', '"v-copy"')
    (registry_dir / "v-copy" / "manifest.json").write_text(manifest)
    Registry(registry_dir).activate(version)
    settings = api_settings(kafka_settings, database_url, redis_url, model_registry=str(registry_dir))
    async with running_api(settings, None) as api:
        reader = await api.key_with("read", "predict")
        forbidden = await api.client.post("/api/v1/models/v-copy/activate", headers=reader)
        unknown = await api.client.post("/api/v1/models/v-missing/activate")
        activated = await api.client.post("/api/v1/models/v-copy/activate")
        listed = (await api.client.get("/api/v1/models")).json()

    assert forbidden.status_code == 403
    assert unknown.status_code == 404
    assert unknown.json()["error"]["details"] == [{"field": "version", "message": "not in the registry"}]
    assert activated.status_code == 200, activated.text
    assert activated.json() == {"active": "v-copy", "previous": version}
    assert listed["active"] == listed["serving"] == "v-copy"
    assert Registry(registry_dir).active_version() == "v-copy"


async def test_database_down_is_503_not_500(
    kafka_settings: KafkaSettings, redis_url: str, inference_engine: InferenceEngine
) -> None:
    dead_database = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    settings = api_settings(kafka_settings, dead_database, redis_url)
    app = create_app(settings, engine=inference_engine)
    async with app.router.lifespan_context(app):
        token = issue_token(app.state.security.jwt, "reader", "reader", 1, "0" * 16)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            headers = {"Authorization": f"Bearer {token}"}
            status = await client.get(f"/api/v1/predict/batch/{uuid.uuid4()}", headers=headers)
            ready = await client.get("/ready")

    assert status.status_code == 503, status.text
    assert status.json()["error"]["code"] == "service_unavailable"
    assert status.headers["retry-after"] == "1"
    assert ready.status_code == 503
    assert ready.json()["dependencies"]["database"]["ok"] is False

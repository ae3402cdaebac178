"""/asyncapi: built once per process (JSON and page), and it never names the internal broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from ingest_api.console import docs
from ingest_api.main import create_app
from ingest_api.settings import ApiSettings

INTERNAL = "kafka-internal.corp.example:9092"
PAGE = {"Accept": "text/html"}


def client_for(settings: ApiSettings) -> httpx.AsyncClient:
    """A client of the API app (the documents need no lifespan: no broker, no database)."""
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://api.test")


async def cpu_ms_per_request(client: httpx.AsyncClient, count: int, **headers: str) -> float:
    """CPU of this process per GET /asyncapi, over `count` requests."""
    started = time.process_time()
    for _ in range(count):
        assert (await client.get("/asyncapi", headers=headers)).status_code == 200
    return (time.process_time() - started) * 1000 / count


async def test_the_documents_are_built_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[ApiSettings] = []
    real_build = docs.build_asyncapi_docs

    def counted(settings: ApiSettings) -> Any:
        builds.append(settings)
        return real_build(settings)

    monkeypatch.setattr(docs, "build_asyncapi_docs", counted)
    async with client_for(ApiSettings(kafka_bootstrap=INTERNAL)) as client:
        first = await asyncio.gather(*(client.get("/asyncapi") for _ in range(10)))
        pages = [await client.get("/asyncapi", headers=PAGE), await client.get("/asyncapi.html")]
        json_ms = await cpu_ms_per_request(client, 50)
        page_ms = await cpu_ms_per_request(client, 50, Accept="text/html")
    print(f"\nASYNCAPI after the first build: {json_ms:.2f} ms CPU per JSON request, "
          f"{page_ms:.2f} ms per page")
    assert len(builds) == 1
    assert all(response.json() == first[0].json() for response in first)
    assert first[0].headers["content-type"] == "application/json" and first[0].headers["vary"] == "Accept"
    assert all(page.headers["content-type"].startswith("text/html") and "<h2>Servers</h2>" in page.text
               for page in pages)
    assert json_ms < 5 and page_ms < 5  # a rebuild costs ~15 ms


@pytest.mark.parametrize("public", [None, "kafka.streamscore.example:9094"])
async def test_servers_name_the_public_broker_never_the_internal_one(public: str | None) -> None:
    settings = ApiSettings(kafka_bootstrap=INTERNAL,
                           **({"public_kafka_bootstrap": public} if public else {}))  # type: ignore[arg-type]
    async with client_for(settings) as client:
        document = (await client.get("/asyncapi")).json()
        page = (await client.get("/asyncapi", headers=PAGE)).text
    hosts = [server["host"] for server in document["servers"].values()]
    assert hosts == [public or ApiSettings.model_fields["public_kafka_bootstrap"].default]
    assert "kafka-internal" not in str(document) and "kafka-internal" not in page

"""Reads that cost more than a request: batch results downloads (bounded, charged per page) against a real
uvicorn server, and the dashboard's segment counts (reused for their TTL)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from sqlalchemy import insert

from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from store.tables import Segment
from tests.helpers.api import (
    Api,
    api_settings,
    batch_csv,
    dataset_rows,
    prediction_rows,
    running_api,
    store_predictions,
)
from tests.helpers.server import serve

ROWS = 2501  # three pages of 1,000


async def stored_task(api: Api, engine: InferenceEngine, unique_id: str) -> str:
    """A batch task with ROWS stored predictions."""
    body = batch_csv([f"d{unique_id}"], dataset_rows(1))
    upload = await api.client.post("/api/v1/predict/batch", files={"file": ("b.csv", body, "text/csv")})
    task_id: str = upload.json()["task_id"]
    rows = prediction_rows(engine, [f"d{unique_id}-{i}" for i in range(ROWS)], dataset_rows(ROWS),
                           source="batch", batch_id=uuid.UUID(task_id))
    await store_predictions(api.services, rows)
    return task_id


@contextlib.asynccontextmanager
async def held_open(host: str, port: int, path: str, key: str) -> AsyncIterator[bytes]:
    """A download that got its status line and then stops reading (a 4 KiB receive buffer and, from the
    server, a 4 KiB send buffer, so the server cannot finish into the kernel's buffers); yields the status
    line."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n".encode())
        yield await reader.readline()
    finally:
        writer.close()


async def test_concurrent_downloads_are_bounded_per_credential(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine,
    unique_id: str,
) -> None:
    settings = api_settings(kafka_settings, database_url, redis_url, downloads_per_principal=2)
    async with running_api(settings, inference_engine) as api, \
            serve(api.app, settings, send_buffer=4096) as served:
        task_id = await stored_task(api, inference_engine, unique_id)
        path = f"/api/v1/predict/batch/{task_id}/results"
        url = served.url + path
        reader, other = await api.key_with("read"), await api.key_with("read")
        key = reader["X-API-Key"]
        async with held_open(served.host, served.port, path, key) as first, \
                held_open(served.host, served.port, path, key) as second:
            third = await served.client.get(url, headers=reader)
            elsewhere = await served.client.get(url, headers=other)
        await asyncio.sleep(0.2)  # the server sees both connections go
        after = await served.client.get(url, headers=reader)
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
    assert third.status_code == 429, third.text
    assert "2 downloads at a time" in third.json()["error"]["message"]
    assert elsewhere.status_code == 200 and len(elsewhere.text.splitlines()) == ROWS
    assert after.status_code == 200 and len(after.text.splitlines()) == ROWS  # the slots came back


async def test_every_page_streamed_is_charged_to_the_rate_limit(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine,
    unique_id: str,
) -> None:
    settings = api_settings(kafka_settings, database_url, redis_url, rate_limit=6)
    async with running_api(settings, inference_engine) as api:
        task_id = await stored_task(api, inference_engine, unique_id)  # the admin key: 1 of its 6
        download = await api.client.get(f"/api/v1/predict/batch/{task_id}/results")  # 1 + 2 pages
        statuses = [(await api.client.get(f"/api/v1/predict/batch/{task_id}")).status_code for _ in range(3)]
    assert download.status_code == 200 and len(download.text.splitlines()) == ROWS
    assert statuses == [200, 200, 429]  # without the pages' charge: 200, 200, 200


async def test_the_dashboard_reuses_its_segment_counts_for_their_ttl(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine,
    unique_id: str,
) -> None:
    settings = api_settings(kafka_settings, database_url, redis_url, dashboard_counts_ttl_s=1.0)
    version = inference_engine.model_version

    async def add_segments(count: int, tag: str) -> None:
        async with api.services.sessionmaker() as session:
            await session.execute(insert(Segment), [
                {"customer_id": f"s{unique_id}-{tag}-{i}", "model_version": version, "label": "high",
                 "score": 90.0, "scored_at": datetime.now(UTC)} for i in range(count)])
            await session.commit()

    async with running_api(settings, inference_engine) as api:
        reader = await api.key_with("read")
        await add_segments(3, "a")
        first = (await api.client.get("/api/v1/dashboard/stats", headers=reader)).json()["segments"]
        await add_segments(5, "b")
        cached = (await api.client.get("/api/v1/dashboard/stats", headers=reader)).json()["segments"]
        await asyncio.sleep(1.0)
        fresh = (await api.client.get("/api/v1/dashboard/stats", headers=reader)).json()["segments"]
    assert cached == first and fresh["high"] == first["high"] + 5

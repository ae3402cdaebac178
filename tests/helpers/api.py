"""Shared helpers for the API tests: a running app on the real engines, topic readers, CSV builders."""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI
from sqlalchemy import insert

from infra.kafka import topic_name
from infra.kafka_connection import connection_options
from infra.settings import KafkaSettings
from ingest_api.auth.credentials import create_api_key
from ingest_api.deps import Services
from ingest_api.fast_path import FastPathMiddleware
from ingest_api.main import create_app
from ingest_api.settings import ApiSettings
from models.engine import InferenceEngine
from schemas.features import FEATURE_NAMES
from store.tables import Prediction as PredictionRow
from tests.helpers.db import DATA_DIR
from tests.helpers.pipeline import topic_partitions


@dataclass
class Api:
    """A running app (lifespan entered), its services and a client holding an all-scope API key."""

    app: FastAPI
    services: Services
    client: httpx.AsyncClient
    settings: ApiSettings

    def topic(self, base: str) -> str:
        return topic_name(self.settings, base)

    async def key_with(self, *scopes: str) -> dict[str, str]:
        """Headers with a fresh API key holding only `scopes`."""
        async with self.services.sessionmaker() as session:
            key = await create_api_key(session, f"k{uuid.uuid4().hex[:12]}", list(scopes))
            await session.commit()
        return {"X-API-Key": key}


def api_settings(kafka: KafkaSettings, database_url: str, redis_url: str, **overrides: Any) -> ApiSettings:
    """API settings on the test's broker prefix, database and Redis (dev mode: generated JWT secret)."""
    values: dict[str, Any] = {
        **kafka.model_dump(),
        "database_url": database_url,
        "redis_url": redis_url,
        "dev_mode": True,
        "database_pool_size": 4,
    }
    values.update(overrides)
    return ApiSettings(**values)


@contextlib.asynccontextmanager
async def running_api(settings: ApiSettings, engine: InferenceEngine | None) -> AsyncIterator[Api]:
    """Enter the app's real lifespan and give a client with an admin API key."""
    app = create_app(settings, engine=engine)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        async with services.sessionmaker() as session:
            key = await create_api_key(session, f"test-{uuid.uuid4().hex[:8]}", ["admin"])
            await session.commit()
        # Unhandled errors must reach the client as the 500 error shape, as they would behind uvicorn.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api.test", headers={"X-API-Key": key}, timeout=30
        ) as client:
            yield Api(app=app, services=services, client=client, settings=settings)


@contextlib.contextmanager
def without_fast_path(app: FastAPI) -> Iterator[None]:
    """Requests take the FastAPI route instead of the fast path, through every other layer of the app."""
    layer: Any = app.middleware_stack  # built by the app's first request
    while not isinstance(layer.app, FastPathMiddleware):
        layer = layer.app
    fast_path = layer.app
    layer.app = fast_path.app
    try:
        yield
    finally:
        layer.app = fast_path


async def read_topic(settings: KafkaSettings, base: str, expected: int, timeout_s: float = 15.0) -> list[Any]:
    """Records of a topic from the beginning until `expected` arrived (or the timeout passed)."""
    consumer = AIOKafkaConsumer(
        topic_name(settings, base),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.topic_prefix}reader-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = datetime.now(UTC).timestamp() + timeout_s
        while len(records) < expected and datetime.now(UTC).timestamp() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def topic_size(settings: KafkaSettings, base: str) -> int:
    """Records on a topic (sum of end offsets over its partitions)."""
    name = topic_name(settings, base)
    consumer = AIOKafkaConsumer(**connection_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, name)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return sum(ends.values())


def dataset_rows(n: int) -> list[list[int]]:
    """The first n CoIL rows (86 ints each), cycling when n exceeds the file."""
    with (DATA_DIR / "train.csv").open(encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows = [[int(value) for value in row] for row in reader]
    return [rows[i % len(rows)] for i in range(n)]


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text with CRLF lines, as spreadsheets write it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def batch_csv(
    customers: Sequence[str],
    features: Sequence[Sequence[int]],
    columns: Sequence[str] = FEATURE_NAMES,
) -> str:
    """A batch CSV with customer_id first and the given feature columns (any order, any subset)."""
    index = {name: i for i, name in enumerate(FEATURE_NAMES)}
    rows = [
        [customer, *(row[index[name]] for name in columns)]
        for customer, row in zip(customers, features, strict=True)
    ]
    return csv_text(["customer_id", *columns], rows)


def prediction_rows(
    engine: InferenceEngine, customers: Sequence[str], features: Sequence[Sequence[int]], **extra: Any
) -> list[dict[str, Any]]:
    """Predictions-table rows for features scored by the real engine in one call (as the sink stores them)."""
    records = engine.score(np.asarray(features, dtype=np.int64)).records()
    rows = []
    for customer_id, record in zip(customers, records, strict=True):
        row = {
            "event_id": uuid.uuid4(),
            "customer_id": customer_id,
            "model_version": record["model_version"],
            "source": "event",
            "batch_id": None,
            "recommendations": record["recommendations"],
            "propensity": record["propensity"],
            "segment_label": record["segment"]["label"],
            "segment_score": record["segment"]["score"],
            "scored_at": datetime.now(UTC),
        }
        row.update(extra)
        rows.append(row)
    return rows


async def store_predictions(services: Services, rows: Sequence[dict[str, Any]]) -> None:
    """Insert prediction rows directly (stands in for the sink where the sink is not under test)."""
    async with services.sessionmaker() as session:
        await session.execute(insert(PredictionRow), list(rows))
        await session.commit()

"""Sink storage benchmark: unnest parameters against COPY into a staging table (the sink's), same SQL after;
with `--feature-log both`, the sink's COPY without and with the feature log (86 bytes a row).

Creates a scratch database on the local Postgres (or STREAMSCORE_BENCH_ADMIN_URL), migrates it, and stores
`--batches` batches of `--rows` predictions (half of them new customers, half updates) with each variant.

    .venv/bin/python bench/bench_sink_store.py --rows 5000 --batches 8
    .venv/bin/python bench/with_engines.py bench/bench_sink_store.py --feature-log both

Prints the median and best milliseconds per batch, µs per row, and the mean CPU µs per row of the client
(the sink) and of its Postgres backend process for each variant.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from unnest_store import store_predictions_unnest

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from migrations.runner import upgrade_head
from store.predictions import PredictionRow, StoredPredictions, store_predictions

Store = Callable[[AsyncSession, Sequence[PredictionRow]], Awaitable[StoredPredictions]]
RECOMMENDATION = {"product_id": "car", "name": "Car policies", "probability": 0.5}
RECOMMENDATIONS = orjson.dumps([RECOMMENDATION] * 3).decode()


def batch(rows: int, index: int, tag: str, features: bool = False) -> list[PredictionRow]:
    """Rows of one batch: customers overlap the previous batch by half (updates as well as inserts)."""
    scored_at = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=index)).isoformat()
    first = index * rows // 2
    logged = [bytes((i + k) % 10 for k in range(86)) if features else None for i in range(rows)]
    return [
        PredictionRow(str(uuid.uuid4()), f"{tag}-{first + i}", "v-bench", "event", None, RECOMMENDATIONS,
                      0.25, "medium", 50.0, scored_at, None, logged[i])
        for i in range(rows)
    ]


async def run(
    variant: str, store: Store, admin_url: str, rows: int, batches: int, features: bool = False
) -> tuple[list[float], list[float], list[float]]:
    """Milliseconds, client and Postgres-backend CPU milliseconds per batch, on a fresh database."""
    name = f"ss_bench_{uuid.uuid4().hex[:8]}"
    dsn = make_url(admin_url).set(drivername="postgresql")
    admin = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade_head, url)
        engine = create_engine(DatabaseSettings(database_url=url))
        sessions = create_sessionmaker(engine)
        timings, cpu, server = [], [], []
        for index in range(batches + 1):
            data = batch(rows, index, variant, features)
            async with sessions() as session:
                pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                backend = psutil.Process(pid)
                await session.commit()
                server_started = sum(backend.cpu_times()[:2])
                started, cpu_started = time.perf_counter(), time.process_time()
                async with session.begin():
                    await store(session, data)
                elapsed, client = time.perf_counter() - started, time.process_time() - cpu_started
            if index:  # the first batch warms the connection and the plans
                timings.append(elapsed * 1000)
                cpu.append(client * 1000)
                server.append((sum(backend.cpu_times()[:2]) - server_started) * 1000)
        await engine.dispose()
        return timings, cpu, server
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--feature-log", choices=["off", "both"], default="off",
                        help="both: compare the sink's COPY without and with the feature log, not unnest")
    args = parser.parse_args()
    admin_url = os.environ.get("STREAMSCORE_BENCH_ADMIN_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    variants: list[tuple[str, Store, bool]] = [
        ("unnest", store_predictions_unnest, False), ("copy", store_predictions, False)]
    if args.feature_log == "both":
        variants = [("log off", store_predictions, False), ("log on", store_predictions, True)]
    for variant, store, features in variants * 2:
        timings, cpu, server = await run(variant, store, admin_url, args.rows, args.batches, features)
        median = statistics.median(timings)
        # CPU as means: the clock ticks every 10 ms, so a batch's figure is quantised and a median sticks
        client = statistics.mean(cpu) * 1000 / args.rows
        backend = statistics.mean(server) * 1000 / args.rows
        print(f"{variant:7s} median {median:7.1f} ms  best {min(timings):7.1f} ms  "
              f"{median * 1000 / args.rows:5.1f} µs/row  CPU µs/row: client {client:4.1f}, "
              f"Postgres backend {backend:4.1f}  ({args.batches} x {args.rows} rows)")


if __name__ == "__main__":
    asyncio.run(main())

"""Replay throughput: N logged predictions re-scored with a model version (target: 100,000 in <= 30 s).

Seeds a fresh database (on STREAMSCORE_BENCH_ADMIN_URL, dropped afterwards) with N predictions served by the
active version through the scorer's and the sink's code (random in-range features, micro-batches of
1-4,000 rows), then times `streamscore replay`'s run (streamscore/replay.py: count, read the log in pages,
score each served micro-batch, COPY to predictions_replay, publish to predictions-replay.v1 on a Tansu broker
of its own) through the active version and through another one.

    .venv/bin/python bench/with_engines.py bench/bench_replay.py --rows 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from migrations.runner import upgrade_head
from models.engine import InferenceEngine
from models.registry import Registry
from schemas.features import FEATURE_RANGES
from streamscore.embedded import TansuBroker
from streamscore.replay import replay_window
from tests.helpers.feature_log import serve

ADMIN_DSN = os.environ.get("STREAMSCORE_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _dsn(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql")
    return (parsed.set(database=database) if database else parsed).render_as_string(hide_password=False)


async def seed(database_url: str, rows: int) -> tuple[datetime, datetime, str]:
    """Serve `rows` random events with the active version; (since, until, active version)."""
    engine = InferenceEngine.load()
    rng = np.random.default_rng(0)
    low = np.array([lo for lo, _ in FEATURE_RANGES])
    high = np.array([hi for _, hi in FEATURE_RANGES])
    features = rng.integers(low, high + 1, size=(rows, len(FEATURE_RANGES))).tolist()
    database = create_engine(DatabaseSettings(database_url=database_url, database_pool_size=2))
    since = datetime.now(UTC) - timedelta(seconds=1)
    started = time.perf_counter()
    batches = await serve(create_sessionmaker(database), engine, [f"b{i}" for i in range(rows)], features,
                          largest=4000)
    print(f"seeded {rows:,} predictions in {batches} micro-batches in {time.perf_counter() - started:.1f} s")
    await database.dispose()
    return since, datetime.now(UTC), engine.model_version


async def main(args: argparse.Namespace) -> None:
    """Seed, then time a replay through the active version and through another one."""
    name = f"bench_replay_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_dsn(ADMIN_DSN))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = _dsn(ADMIN_DSN, name).replace("postgresql://", "postgresql+asyncpg://", 1)
    log_path = Path(args.log_dir) / f"tansu-{name}.log"
    broker = TansuBroker(log_path=log_path).start() if args.publish else None
    try:
        await asyncio.to_thread(upgrade_head, url)
        since, until, active = await seed(url, args.rows)
        os.environ["STREAMSCORE_DATABASE_URL"] = url
        if broker is not None:
            os.environ.update(STREAMSCORE_KAFKA_BOOTSTRAP=broker.bootstrap,
                              STREAMSCORE_KAFKA_IDEMPOTENT="false",  # Tansu has no InitProducerId
                              STREAMSCORE_TOPIC_PREFIX=f"{name}.")
        other = next(v for v in Registry().versions() if v != active)
        for version in (active, other):
            started, cpu = time.perf_counter(), time.process_time()
            figures = await replay_window(version, since, until, args.publish, None)
            elapsed = time.perf_counter() - started
            active_mark = " (active)" if version == active else ""
            print(f"replay {figures['rows']:,} rows with {version}{active_mark}: "
                  f"{elapsed:.1f} s wall, {time.process_time() - cpu:.1f} s CPU of this process, "
                  f"{figures['rows'] / elapsed:,.0f} rows/s (target 100,000 in <= 30 s); identical "
                  f"{figures['exact_agreement']:.4f}, top-3 {figures['top3_agreement']:.4f}, Spearman "
                  f"{figures['propensity_spearman']:.4f}, segment {figures['segment_agreement']:.4f} "
                  f"(loadavg {os.getloadavg()[0]:.1f})")
    finally:
        if broker is not None:
            broker.stop()
        admin = await asyncpg.connect(_dsn(ADMIN_DSN))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--publish", action=argparse.BooleanOptionalAction, default=True,
                        help="Publish to predictions-replay.v1 (a Tansu broker of the bench's own).")
    parser.add_argument("--log-dir", default="/tmp/streamscore-bench")
    return parser.parse_args()


if __name__ == "__main__":
    options = parse_args()
    Path(options.log_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(main(options))

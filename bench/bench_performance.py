"""Live-quality benchmark: the performance query over 1,000,000 predictions and 100,000 outcomes, and the
sink's cost per outcome against its cost per prediction.

    .venv/bin/python bench/with_engines.py bench/bench_performance.py --predictions 1000000 --outcomes 100000

Creates a scratch database (STREAMSCORE_BENCH_ADMIN_URL), migrates it, fills `predictions` (4 per customer
over 200 days, 3 random products each) and `outcomes` (30 % caravan, a tenth of customers unknown) with
server-side generate_series, ANALYZEs, packs the prediction chunks and the 90-day horizon's outcome links once
(store/prediction_chunks.py, store/outcome_links.py, timed), then times GET /api/v1/models/performance's work
for the whole window (after VACUUM ANALYZE, as autovacuum would): the packed rows read, the join in one
statement (which reads the packed links: their read alone is timed apart), then the metric math. Prints
their milliseconds (median of `--repeat`), the CPU of the Postgres backend and this process (parallel workers
off, so the backend's CPU is all of Postgres's), the same with `REFRESH_MIN_ROWS - 1` predictions and as many
outcomes stored after the packs (linked live), and the sink's µs per row storing outcomes and predictions in
batches of `--rows`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from ingest_api.console.quality import figures
from migrations.runner import upgrade_head
from schemas.features import PRODUCT_IDS
from store.outcome_join import VERSION, Source, _join, join_outcomes, join_parameters, join_source
from store.outcome_links import PACKED, link_watermarks, plan_hash_joins, refresh_links
from store.outcomes import OutcomeRow, store_outcomes
from store.prediction_chunks import REFRESH_MIN_ROWS, read_chunks, refresh_chunks, watermarks
from store.predictions import PredictionRow, store_predictions

NOW = datetime(2026, 12, 1, tzinfo=UTC)
HORIZON = timedelta(days=90)
_PRODUCTS = "ARRAY[" + ",".join(f"'{p}'" for p in PRODUCT_IDS) + "]"
_FILL_PREDICTIONS = f"""
INSERT INTO predictions (event_id, customer_id, model_version, source, recommendations, propensity,
                         segment_label, segment_score, scored_at)
SELECT gen_random_uuid(), 'c' || (i / 4), 'v-bench', 'event',
       jsonb_build_array(jsonb_build_object('product_id', ({_PRODUCTS})[1 + i % 22]),
                         jsonb_build_object('product_id', ({_PRODUCTS})[1 + (i / 7) % 22]),
                         jsonb_build_object('product_id', ({_PRODUCTS})[1 + (i / 3) % 22])),
       random() ^ 2, 'medium', 50.0, CAST(:now AS timestamptz) - make_interval(secs => random() * 200 * 86400)
FROM generate_series(0, CAST(:n AS int) - 1) AS i
"""
_FILL_OUTCOMES = f"""
INSERT INTO outcomes (outcome_id, customer_id, product_id, occurred_at, source)
SELECT :prefix || i, 'c' || floor(random() * CAST(:customers AS int) * 1.1)::bigint,
       CASE WHEN random() < 0.3 THEN 'caravan' ELSE ({_PRODUCTS})[1 + floor(random() * 22)::int] END,
       CAST(:now AS timestamptz) - make_interval(secs => random() * 200 * 86400), 'bench'
FROM generate_series(0, CAST(:n AS int) - 1) AS i
"""


async def sink_costs(sessions: object, rows: int, batches: int) -> tuple[float, float]:
    """µs per row storing outcomes and predictions (median batch), each in its own transaction."""
    results = []
    for kind in ("outcomes", "predictions"):
        timings = []
        for index in range(batches + 1):
            stamp = (NOW - timedelta(days=1, seconds=index)).isoformat()
            tag = uuid.uuid4().hex[:8]
            async with sessions() as session, session.begin():  # type: ignore[operator]
                started = time.perf_counter()
                if kind == "outcomes":
                    await store_outcomes(session, [
                        OutcomeRow(f"s{tag}-{i}", f"sc{i}", "caravan", stamp, "bench") for i in range(rows)])
                else:
                    await store_predictions(session, [PredictionRow(
                        str(uuid.uuid4()), f"sc{i}", "v-sink", "event", None,
                        '[{"product_id":"car","name":"Car policies","probability":0.5}]', 0.2, "medium", 50.0,
                        stamp) for i in range(rows)])
                elapsed = time.perf_counter() - started
            if index:
                timings.append(elapsed)
        results.append(statistics.median(timings) * 1e6 / rows)
    return results[0], results[1]


def largest_difference(a: Any, b: Any) -> float:
    """The largest absolute difference between two performance documents (inf when their shapes differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return max((largest_difference(a[k], b.get(k)) for k in a), default=0.0) if a.keys() == b.keys() \
            else float("inf")
    if isinstance(a, list) and isinstance(b, list):
        return max(map(largest_difference, a, b), default=0.0) if len(a) == len(b) else float("inf")
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b))
    return 0.0 if a == b else float("inf")


async def full_statement(sessions: Any) -> dict[str, Any]:
    """The performance document by the full statement: every prediction and every link read live."""
    async with sessions() as session, session.begin():
        joined = await join_source(session, Source(VERSION.candidates, VERSION.window),
                                   NOW - timedelta(days=365), NOW, HORIZON, NOW, version="v-bench", after0=0,
                                   after1=0)
    return figures(joined)


async def question(sessions: Any, repeat: int, title: str) -> None:
    """Time the performance question `repeat` times and print its medians and step breakdown."""
    since, until = NOW - timedelta(days=365), NOW
    packed, links, sql, math, total, cpu = [], [], [], [], [], []
    document: dict[str, Any] = {}
    for _ in range(repeat):
        async with sessions() as session, session.begin():
            t0 = time.perf_counter()
            await read_chunks(session, "v-bench", since, until, await watermarks(session))
            packed.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            await session.execute(text(f"SELECT count(*), bool_or(hit) FROM ({PACKED}) l"), join_parameters(
                since, until, HORIZON, version="v-bench", **await link_watermarks(session, HORIZON)))
            links.append((time.perf_counter() - t0) * 1000)
        async with sessions() as session, session.begin():
            await session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            backend = psutil.Process(pid)
            server_cpu, client_cpu = sum(backend.cpu_times()[:2]), time.process_time()
            t0 = time.perf_counter()
            joined = await join_outcomes(session, "v-bench", since, until, HORIZON, NOW)
            t1 = time.perf_counter()
            server_cpu = sum(backend.cpu_times()[:2]) - server_cpu
        document = figures(joined)
        t2 = time.perf_counter()
        sql.append((t1 - t0) * 1000)
        math.append((t2 - t1) * 1000)
        total.append((t2 - t0) * 1000)
        # CPU of the Postgres backend and of this process: what a quiet host's wall time comes to when the
        # machine is shared (the statement runs on one backend: parallel workers are off above).
        cpu.append((server_cpu + time.process_time() - client_cpu) * 1000)
    print(f"{title}: median {statistics.median(total):.0f} ms (packed rows read "
          f"{statistics.median(packed):.0f} ms, with the join statement {statistics.median(sql):.0f} ms "
          f"(its packed links alone read in {statistics.median(links):.0f} ms) + "
          f"metric math {statistics.median(math):.0f} ms), best {min(total):.0f} ms over {repeat} runs; "
          f"{document['predictions']:,} predictions, {document['labelled']:,} labelled, "
          f"{document['pending']:,} pending, {document['unmatched']:,} unmatched outcomes; CPU (Postgres "
          f"backend + client) median {statistics.median(cpu):.0f} ms")
    started = time.perf_counter()
    full = await full_statement(sessions)
    print(f"  the full statement instead (nothing packed read): {time.perf_counter() - started:.2f} s; "
          f"largest difference from it {largest_difference(document, full):.3g}")


async def vacuum(engine: Any) -> None:
    """VACUUM ANALYZE the database: the visibility map and statistics, as autovacuum keeps them."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE"))


async def explain(sessions: Any) -> None:
    """Print the join statement's EXPLAIN ANALYZE with the current watermarks, as join_outcomes binds it."""
    async with sessions() as session, session.begin():
        await plan_hash_joins(session)
        marks = await watermarks(session)
        plan = await session.execute(
            text("EXPLAIN (ANALYZE, COSTS OFF) " + _join(VERSION, packed=True).text),
            join_parameters(NOW - timedelta(days=365), NOW, HORIZON, version="v-bench",
                            after0=marks.get(0, 0), after1=marks.get(1, 0),
                            **await link_watermarks(session, HORIZON)))
        print("\n".join(row[0] for row in plan))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--outcomes", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--explain", action="store_true", help="Print the join's EXPLAIN ANALYZE too.")
    args = parser.parse_args()
    admin_url = os.environ.get("STREAMSCORE_BENCH_ADMIN_URL",
                               "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    name = f"ss_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(make_url(admin_url).set(drivername="postgresql")
                                  .render_as_string(hide_password=False))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade_head, url)
        engine = create_engine(DatabaseSettings(database_url=url))
        sessions = create_sessionmaker(engine)
        started = time.perf_counter()
        async with sessions() as session, session.begin():
            await session.execute(text(_FILL_PREDICTIONS), {"n": args.predictions, "now": NOW})
            await session.execute(text(_FILL_OUTCOMES), {"n": args.outcomes, "now": NOW, "prefix": "o",
                                                          "customers": args.predictions // 4})
        await vacuum(engine)
        print(f"filled {args.predictions:,} predictions and {args.outcomes:,} outcomes in "
              f"{time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        packed = await refresh_chunks(sessions, min_rows=1)
        print(f"packed {packed:,} predictions into chunks in {time.perf_counter() - started:.1f} s "
              "(once; each later refresh packs only the rows stored since)")
        started = time.perf_counter()
        await refresh_links(sessions, HORIZON, min_rows=1)
        async with sessions() as session, session.begin():
            links = (await session.execute(text("SELECT count(*) FROM outcome_links"))).scalar_one()
        print(f"packed {links:,} outcome links in {time.perf_counter() - started:.1f} s (once; each later "
              "refresh links only the outcomes and predictions stored since)")
        await vacuum(engine)
        if args.explain:
            await explain(sessions)
        await question(sessions, args.repeat, "performance query")
        async with sessions() as session, session.begin():
            await session.execute(text(_FILL_PREDICTIONS), {"n": REFRESH_MIN_ROWS - 1, "now": NOW})
            await session.execute(text(_FILL_OUTCOMES), {
                "n": REFRESH_MIN_ROWS - 1, "now": NOW, "prefix": "late", "customers": args.predictions // 4})
        if args.explain:
            await explain(sessions)
        await question(sessions, args.repeat,
                       f"with {REFRESH_MIN_ROWS - 1:,} predictions and as many outcomes beyond the packs")
        started = time.perf_counter()
        moved = await refresh_links(sessions, HORIZON, min_rows=1)
        print(f"a later link refresh ({moved:,} outcome and prediction ids beyond the watermarks): "
              f"{time.perf_counter() - started:.2f} s")
        outcome_us, prediction_us = await sink_costs(sessions, args.rows, 4)
        print(f"sink store, {args.rows} rows a batch: outcomes {outcome_us:.1f} µs/row, "
              f"predictions {prediction_us:.1f} µs/row")
        await engine.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())

"""The customers view: each customer's latest prediction by LATEST_ORDER, kept by a downgrade and back."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from migrations.runner import alembic_config, upgrade_head
from store.predictions import PredictionRow, store_predictions
from tests.helpers.pipeline import fetch, prediction

CUSTOMERS = "SELECT * FROM customers ORDER BY customer_id"


async def store(database_url: str, batches: list[list[PredictionRow]]) -> None:
    """Each batch in its own transaction, as the sink writes them."""
    engine = create_engine(DatabaseSettings(database_url=database_url))
    try:
        for rows in batches:
            async with create_sessionmaker(engine)() as session:
                await store_predictions(session, rows)
                await session.commit()
    finally:
        await engine.dispose()


def latest_columns(rows: list[Any]) -> list[tuple[Any, ...]]:
    """What each customer row says, first_seen_at aside."""
    return [(r["customer_id"], r["last_event_id"], r["model_version"], r["propensity"], r["last_scored_at"],
             r["predictions_count"]) for r in rows]


async def test_customers_follow_the_latest_prediction_and_survive_a_downgrade(
    database_url: str, unique_id: str
) -> None:
    a, b = f"a{unique_id}", f"b{unique_id}"
    early = prediction(a, minute=1, propensity=0.1)
    tie_first, tie_second = prediction(a, minute=5, propensity=0.2), prediction(a, minute=5, propensity=0.3)
    late_in_first_batch = prediction(b, minute=9, propensity=0.4)
    stale_in_second_batch = prediction(b, minute=2, propensity=0.5)
    await store(database_url, [
        [PredictionRow.of(p) for p in (early, tie_first, late_in_first_batch)],
        [PredictionRow.of(p) for p in (tie_second, stale_in_second_batch, early)],  # early again: a replay
    ])
    rows = await fetch(database_url, CUSTOMERS)
    # a: the 5-minute tie goes to the later row (greater id); b: the older scored_at arriving later loses.
    assert latest_columns(rows) == [
        (a, tie_second.event_id, "v-test", 0.3, tie_second.scored_at, 3),
        (b, late_in_first_batch.event_id, "v-test", 0.4, late_in_first_batch.scored_at, 2),
    ]
    assert all(r["first_seen_at"] is not None for r in rows)

    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0004_shadow")  # a table, filled from predictions
    assert len(await fetch(database_url, "SELECT 1 FROM pg_tables WHERE tablename = 'customers'")) == 1
    assert latest_columns(await fetch(database_url, CUSTOMERS)) == latest_columns(rows)
    await asyncio.to_thread(upgrade_head, database_url)
    assert latest_columns(await fetch(database_url, CUSTOMERS)) == latest_columns(rows)

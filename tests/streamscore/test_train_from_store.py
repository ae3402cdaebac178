"""`train --from-store` reads back exactly the training set that was streamed (same rows, same order); with
`--labels outcomes` its labels are the caravan purchases within each prediction's closed horizon."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from models.data import load_matrix, resolve_data_path
from models.engine import InferenceEngine
from schemas.features import TARGET_INDEX
from schemas.outcomes import CARAVAN
from store.outcomes import OutcomeRow, store_outcomes
from streamscore.train_store import export_training_set
from tests.helpers.api import dataset_rows
from tests.helpers.feature_log import serve


async def test_the_feature_log_gives_back_the_streamed_training_set(
    database_url: str, inference_engine: InferenceEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = load_matrix(resolve_data_path())
    customers = [f"t{i:05d}" for i in range(len(original))]  # customer order = file order
    shuffled = np.random.default_rng(0).permutation(len(original))  # arrival order does not matter
    database = create_engine(DatabaseSettings(database_url=database_url, database_pool_size=1))
    try:
        await serve(create_sessionmaker(database), inference_engine, [customers[i] for i in shuffled],
                    original[shuffled].tolist(), largest=4000)
    finally:
        await database.dispose()
    monkeypatch.setenv("STREAMSCORE_DATABASE_URL", database_url)

    path, source = await _export(tmp_path)

    assert np.array_equal(load_matrix(path), original)  # the matrix `train --data` reads from the file
    lookups = resolve_data_path().with_name("lookups.json")
    assert (path.parent / "lookups.json").read_bytes() == lookups.read_bytes()
    assert source["kind"] == "feature_log" and source["customers"] == len(original)


async def _export(directory: Path, labels: str = "logged") -> tuple[Path, dict[str, Any]]:
    """The export runs its own event loop (as the CLI does), so in a thread here."""
    return await asyncio.to_thread(export_training_set, "1h", labels, directory)


HORIZON = timedelta(seconds=3)


async def test_outcome_labels_are_caravan_purchases_within_a_closed_horizon(
    database_url: str, inference_engine: InferenceEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = dataset_rows(232)
    a = [f"a{i:03d}" for i in range(200)]
    database = create_engine(DatabaseSettings(database_url=database_url, database_pool_size=1))
    sessionmaker = create_sessionmaker(database)
    try:
        await serve(sessionmaker, inference_engine, [*a, "x", "y"], rows[:202], largest=60)
        await asyncio.sleep(0.2)
        await serve(sessionmaker, inference_engine, ["x", "y"], rows[202:204], seed=1)  # their latest
        async with sessionmaker() as session:
            scored = (await session.execute(text(
                "SELECT customer_id, min(scored_at), max(scored_at) FROM predictions GROUP BY customer_id"
            ))).all()
        first = {c: low for c, low, _ in scored}
        latest = {c: high for c, _, high in scored}
        bought = {  # customer: (product, when)
            **{c: (CARAVAN, latest[c] + HORIZON / 2) for c in a[0::4]},  # 1
            **{c: (CARAVAN, latest[c] + 2 * HORIZON) for c in a[1::4]},  # 0: after the horizon
            **{c: ("car", latest[c] + HORIZON / 2) for c in a[2::4]},  # 0: not a caravan
            "x": (CARAVAN, latest["x"] + HORIZON / 2),  # 1: its latest prediction takes it
            "y": (CARAVAN, first["y"] + (latest["y"] - first["y"]) / 2),  # 0: bought before its latest
        }
        async with sessionmaker() as session, session.begin():
            await store_outcomes(session, [OutcomeRow(f"o-{c}", c, product, at.isoformat(), "test")
                                           for c, (product, at) in bought.items()])
        await asyncio.sleep(HORIZON.total_seconds() + 0.2)  # every horizon so far closed
        await serve(sessionmaker, inference_engine, [f"b{i}" for i in range(28)], rows[204:], seed=2)
    finally:
        await database.dispose()
    monkeypatch.setenv("STREAMSCORE_DATABASE_URL", database_url)
    monkeypatch.setenv("STREAMSCORE_OUTCOME_HORIZON_SECONDS", str(int(HORIZON.total_seconds())))

    path, source = await _export(tmp_path, "outcomes")  # the b rows' horizons are still open

    customers = sorted([*a, "x", "y"])
    served = dict(zip([*a, "x", "y"], rows[:200] + rows[202:204], strict=True))
    expected = np.array([served[c] for c in customers])

    def buyer(customer: str) -> int:  # a caravan in (latest, latest + horizon]
        product, at = bought.get(customer, ("", latest[customer]))
        return int(product == CARAVAN and latest[customer] < at <= latest[customer] + HORIZON)

    expected[:, TARGET_INDEX] = [buyer(c) for c in customers]
    assert np.array_equal(load_matrix(path), expected)
    assert int(expected[:, TARGET_INDEX].sum()) == 51  # a[0::4] and x
    assert source["labels"].startswith("outcomes") and source["horizon_seconds"] == HORIZON.total_seconds()
    assert (source["customers"], source["buyers"], source["non_buyers"], source["open_horizon_excluded"]) == (
        202, 51, 151, 28)

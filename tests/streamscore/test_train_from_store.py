"""`train --from-store` reads back exactly the training set that was streamed (same rows, same order)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from models.data import load_matrix, resolve_data_path
from models.engine import InferenceEngine
from streamscore.train_store import export_training_set
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
    with pytest.raises(ValueError, match="outcomes table"):
        export_training_set("1h", "outcomes", tmp_path)


async def _export(directory: Path) -> tuple[Path, dict[str, Any]]:
    """The export runs its own event loop (as the CLI does), so in a thread here."""
    return await asyncio.to_thread(export_training_set, "1h", "logged", directory)

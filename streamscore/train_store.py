"""`streamscore train --from-store`: the training CSV built from the feature log (docs/replay.md)."""

from __future__ import annotations

import asyncio
import csv
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from schemas.features import FEATURE_NAMES, TARGET_INDEX, TARGET_NAME

LABEL_SOURCES = ("logged", "outcomes")


@dataclass(frozen=True)
class Logged:
    """Each customer's latest logged prediction of a window: ids and features (label column as logged)."""

    customers: list[str]
    ids: np.ndarray
    matrix: np.ndarray


async def read_logged(
    since: datetime, until: datetime, horizon: timedelta | None = None
) -> tuple[Logged, Any]:
    """The window's training rows and, given a horizon, their outcome join as of `until` (one snapshot)."""
    from infra.database import create_engine, create_sessionmaker
    from infra.settings import DatabaseSettings
    from store.training_log import join_latest, latest_logged_features

    database = create_engine(DatabaseSettings())
    try:  # one REPEATABLE READ snapshot: the rows and their labels are of the same predictions
        snapshot = database.execution_options(isolation_level="REPEATABLE READ")
        async with create_sessionmaker(snapshot)() as session, session.begin():
            logged = Logged(*await latest_logged_features(session, since, until))
            joined = None if horizon is None else await join_latest(session, since, until, horizon, until)
        return logged, joined
    finally:
        await database.dispose()


def outcome_labelled(logged: Logged, ids: np.ndarray, status: np.ndarray) -> tuple[Logged, dict[str, int]]:
    """The rows whose horizon closed, their label column set from outcomes (models.live_quality); counts."""
    from models.live_quality import training_labels

    order = np.argsort(ids)
    at = order[np.minimum(np.searchsorted(ids, logged.ids, sorter=order), len(ids) - 1)] if len(ids) else ids
    if len(ids) != len(logged.ids) or not np.array_equal(ids[at], logged.ids):
        raise RuntimeError("the outcome join did not label every training row")
    mask, y = training_labels(status[at])
    matrix = logged.matrix[mask].copy()
    matrix[:, TARGET_INDEX] = y
    kept = Logged([c for c, keep in zip(logged.customers, mask.tolist(), strict=True) if keep],
                  logged.ids[mask], matrix)
    return kept, {"buyers": int(y.sum()), "non_buyers": int(len(y) - y.sum()),
                  "open_horizon_excluded": int((~mask).sum())}


def export_training_set(since: str, labels: str, directory: Path) -> tuple[Path, dict[str, Any]]:
    """Write train.csv (and the lookups it needs) from the feature log; (its path, the manifest's source).

    `logged` labels are the CARAVAN value each event carried; `outcomes` labels come from the outcomes
    table through the one outcome join (a caravan bought within the horizon after the prediction: 1; the
    horizon closed without one: 0; horizon still open: row left out).
    """
    from models.data import resolve_data_path
    from streamscore.replay import parse_time

    if labels not in LABEL_SOURCES:
        raise ValueError(f"--labels must be one of {', '.join(LABEL_SOURCES)}")
    start, end = parse_time(since), datetime.now(UTC)
    horizon = None
    if labels == "outcomes":
        from ingest_api.console.quality import QualitySettings

        horizon = QualitySettings().horizon
    logged, joined = asyncio.run(read_logged(start, end, horizon))
    if not logged.customers:
        raise ValueError(f"the feature log holds no prediction scored since {start.isoformat()}")
    source: dict[str, Any] = {
        "kind": "feature_log",
        "since": start.isoformat(),
        "until": end.isoformat(),
        "rows": "each customer's latest logged prediction of the window",
        "labels": f"{TARGET_NAME} as logged with each event",
    }
    if joined is not None and horizon is not None:
        logged, counts = outcome_labelled(logged, joined.ids, joined.status)
        if not counts["buyers"] or not counts["non_buyers"]:
            raise ValueError(
                f"outcomes label {counts['buyers']} buyer(s) and {counts['non_buyers']} non-buyer(s) among "
                f"the predictions since {start.isoformat()} whose horizon ({horizon}) closed; training needs "
                "both (an earlier --since, or --labels logged)")
        source.update(labels="outcomes: caravan bought within the horizon after the prediction "
                             "(store/outcome_join.py)",
                      horizon_seconds=horizon.total_seconds(), labelled_as_of=end.isoformat(), **counts)
    source["customers"] = len(logged.customers)
    path = directory / "train.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(FEATURE_NAMES)
        writer.writerows(logged.matrix.tolist())
    shutil.copyfile(resolve_data_path().with_name("lookups.json"), directory / "lookups.json")
    return path, source

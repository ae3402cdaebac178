"""`streamscore train --from-store`: the training CSV built from the feature log (docs/replay.md)."""

from __future__ import annotations

import asyncio
import csv
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.features import FEATURE_NAMES, TARGET_NAME

LABEL_SOURCES = ("logged", "outcomes")


async def _latest(since: datetime, until: datetime) -> tuple[list[str], Any]:
    from infra.database import create_engine, create_sessionmaker
    from infra.settings import DatabaseSettings
    from store.training_log import latest_logged_features

    database = create_engine(DatabaseSettings())
    try:
        async with create_sessionmaker(database)() as session:
            return await latest_logged_features(session, since, until)
    finally:
        await database.dispose()


def export_training_set(since: str, labels: str, directory: Path) -> tuple[Path, dict[str, Any]]:
    """Write train.csv (and the lookups it needs) from the feature log; (its path, the manifest's source).

    `logged` labels are the CARAVAN value each event carried; `outcomes` (purchases within a closed
    horizon) needs the outcomes table of issue 26 and is refused until it exists.
    """
    from models.data import resolve_data_path
    from streamscore.replay import parse_time

    if labels not in LABEL_SOURCES:
        raise ValueError(f"--labels must be one of {', '.join(LABEL_SOURCES)}")
    if labels == "outcomes":
        raise ValueError("--labels outcomes needs the outcomes table (issue 26), not on this version yet; "
                         "use --labels logged")
    start, end = parse_time(since), datetime.now(UTC)
    customers, matrix = asyncio.run(_latest(start, end))
    if not customers:
        raise ValueError(f"the feature log holds no prediction scored since {start.isoformat()}")
    path = directory / "train.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(FEATURE_NAMES)
        writer.writerows(matrix.tolist())
    shutil.copyfile(resolve_data_path().with_name("lookups.json"), directory / "lookups.json")
    source = {
        "kind": "feature_log",
        "since": start.isoformat(),
        "until": end.isoformat(),
        "customers": len(customers),
        "rows": "each customer's latest logged prediction of the window",
        "labels": f"{TARGET_NAME} as logged with each event" if labels == "logged" else "outcomes",
    }
    return path, source

"""Live feature drift in the scorer: every decoded micro-batch feeds a rolling window, whose per-feature
PSI against the active version's training bins goes to Prometheus and the Redis stats hash."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from prometheus_client import Gauge

from models.drift import DRIFT_COLUMNS, PSI_FLAG
from schemas.features import FEATURE_NAMES

if TYPE_CHECKING:
    from scorer.runtime import ScorerRuntime

log = logging.getLogger(__name__)

PSI = Gauge("scorer_feature_psi", "PSI of the live window against the training bins.", ["feature"])
FLAGGED = Gauge("scorer_drift_flagged_features", f"Features whose PSI is above {PSI_FLAG}.")
WINDOW = Gauge("scorer_drift_window_rows", "Live rows in the drift window.")


def attach(runtime: ScorerRuntime) -> None:
    """Expose the runtime's drift monitor: gauges read it at scrape time, the stats hash at each write."""
    monitor = runtime.drift

    def reading(name: str) -> Any:
        def value() -> float:
            figure = monitor.figures()["psi"][name]
            return float("nan") if figure is None else float(figure)

        return value

    for i in DRIFT_COLUMNS:
        PSI.labels(FEATURE_NAMES[i]).set_function(reading(FEATURE_NAMES[i]))
    FLAGGED.set_function(lambda: len(monitor.figures()["flagged"]))
    WINDOW.set_function(lambda: monitor.figures()["window_rows"])
    runtime.stats.providers.append(lambda: stats_fields(runtime))


def observe(runtime: ScorerRuntime, matrix: np.ndarray) -> None:
    """Add a batch's decoded rows; follow the active version's training bins across hot swaps."""
    engine, monitor = runtime.engine, runtime.drift
    if engine is None or not len(matrix):
        return
    if monitor.model_version != engine.model_version:
        try:
            monitor.use(engine.model_version, engine.manifest)
        except Exception as error:  # drift is a report: it must never fail the batch
            log.warning("drift reference unavailable", extra={"error": str(error)})
            monitor.use(engine.model_version, {})
    monitor.observe(matrix)


def stats_fields(runtime: ScorerRuntime) -> dict[str, str]:
    """The drift fields of the scorer's Redis stats hash."""
    figures = runtime.drift.figures()
    return {
        "drift_model_version": figures["model_version"] or "",
        "drift_window_rows": str(figures["window_rows"]),
        "drift_psi": orjson.dumps(figures["psi"]).decode(),
        "drift_flagged": ",".join(figures["flagged"]),
    }

"""The shadow and drift reports' states, from stats fields written by the scorer's own code."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from ingest_api.scorer_stats import drift_report, shadow_status
from models.drift import MIN_ROWS, DriftMonitor
from models.registry import PACKAGE_REGISTRY, Registry
from models.shadow import ShadowComparison
from scorer import drift, shadow
from tests.helpers.drift import SHIFTED, shifted_training_rows


def _drift_fields(monitor: DriftMonitor) -> dict[str, str]:
    return drift.stats_fields(cast(Any, SimpleNamespace(drift=monitor)))


def test_drift_goes_from_no_traffic_to_warming_up_to_live() -> None:
    registry = Registry(PACKAGE_REGISTRY)
    monitor = DriftMonitor()
    monitor.use(registry.active_version(), registry.manifest())
    assert drift_report(({"a": _drift_fields(monitor)}, None)).state == "no_live_traffic"
    assert drift_report(({}, None)).state == "no_live_traffic"
    monitor.observe(shifted_training_rows(MIN_ROWS - 1))
    early = drift_report(({"a": _drift_fields(monitor)}, None))
    assert early.state == "warming_up" and early.window_rows == MIN_ROWS - 1 and early.flagged == []
    monitor.observe(shifted_training_rows(MIN_ROWS, seed=1))
    live = drift_report(({"a": _drift_fields(monitor)}, None))
    assert live.state == "live" and set(live.flagged) == set(SHIFTED)
    assert drift_report((None, "down")).state == "unavailable"


def test_shadow_states_follow_the_pointer_and_the_scorers() -> None:
    comparison = ShadowComparison()
    idle = {"a": shadow.stats_fields(comparison)}
    assert shadow_status("v1", None, (idle, None)).state == "no_shadow"
    assert shadow_status("v1", "v2", (idle, None)).state == "no_live_traffic"
    comparison.reset("v1", "v2")  # shadowing, nothing scored yet
    waiting = {"a": shadow.stats_fields(comparison)}
    assert shadow_status("v1", "v2", (waiting, None)).state == "no_live_traffic"
    down = shadow_status("v1", "v2", (None, "scorer stats store unavailable: TimeoutError"))
    assert down.state == "unavailable" and down.reason and down.shadow == "v2" and down.rows == 0

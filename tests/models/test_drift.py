"""Feature drift: training bins in the manifest, PSI, and the rolling monitor on a shifted copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import data as D
from models.drift import MIN_ROWS, DriftMonitor, backfill_manifest, psi, training_bins, value_counts
from models.registry import Registry
from tests.helpers.drift import SHIFTED, shifted_training_rows


@pytest.fixture(scope="module")
def matrix() -> np.ndarray:
    return D.load_matrix(D.resolve_data_path())


def test_the_shipped_manifest_holds_the_training_bins(matrix: np.ndarray) -> None:
    manifest = Registry().manifest()
    assert manifest["drift"] == json.loads(json.dumps(training_bins(matrix)))
    assert len(manifest["drift"]["features"]) == 85 and "CARAVAN" not in manifest["drift"]["features"]
    for entry in manifest["drift"]["features"].values():
        assert len(entry["shares"]) == entry["high"] - entry["low"] + 1
        assert sum(entry["shares"]) == pytest.approx(1.0, abs=1e-4)


def test_backfill_adds_only_the_drift_block(tmp_path: Path) -> None:
    registry = Registry()
    source = registry.path(registry.active_version()) / "manifest.json"
    manifest = json.loads(source.read_text())
    manifest.pop("drift")
    target = tmp_path / "v" / "manifest.json"
    target.parent.mkdir()
    target.write_text(json.dumps(manifest, indent=2) + "\n")
    backfill_manifest(target, D.resolve_data_path())
    assert target.read_text() == source.read_text()


def test_value_counts_match_a_per_feature_count_and_clip_strays(matrix: np.ndarray) -> None:
    from models.drift import DRIFT_COLUMNS
    from schemas.features import FEATURE_RANGES

    rows = matrix[:300].copy()
    counts = value_counts(rows)
    start = 0
    for j in DRIFT_COLUMNS:
        low, high = FEATURE_RANGES[j]
        expected = [(rows[:, j] == v).sum() for v in range(low, high + 1)]
        assert counts[start : start + len(expected)].tolist() == expected
        start += len(expected)
    rows[0, 0], rows[1, 5] = 99, -3
    assert value_counts(rows).sum() == 300 * len(DRIFT_COLUMNS)


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    base = np.array([0.5, 0.3, 0.2, 0.0])
    assert psi(base, base) == pytest.approx(0.0)
    assert 0 < psi(base, [0.45, 0.32, 0.23, 0.0]) < psi(base, [0.2, 0.3, 0.5, 0.0])
    assert psi(base, [0.0, 0.0, 0.0, 1.0]) > 5


def test_monitor_flags_the_shifted_features_and_only_those(matrix: np.ndarray) -> None:
    monitor = DriftMonitor()
    monitor.use("v", Registry().manifest())
    assert all(v is None for v in monitor.figures()["psi"].values())
    rows = shifted_training_rows(3000)
    for start in range(0, len(rows), 250):
        monitor.observe(rows[start : start + 250])
    figures = monitor.figures()
    assert figures["window_rows"] == 3000
    assert set(figures["flagged"]) == set(SHIFTED)
    assert list(figures["psi"])[: len(SHIFTED)] == figures["flagged"]  # most drifted first
    unshifted = [v for k, v in figures["psi"].items() if k not in SHIFTED]
    assert max(v for v in unshifted if v is not None) < 0.05 and None not in unshifted


def test_monitor_window_forgets_old_traffic(matrix: np.ndarray) -> None:
    monitor = DriftMonitor(window_rows=1000)
    monitor.use("v", Registry().manifest())
    monitor.observe(shifted_training_rows(1000))
    assert monitor.figures()["flagged"]
    for start in range(0, 2000, MIN_ROWS):
        monitor.observe(matrix[start : start + MIN_ROWS])
    assert monitor.figures()["window_rows"] == 1000 and monitor.figures()["flagged"] == []


def test_a_manifest_without_bins_reports_no_psi(matrix: np.ndarray) -> None:
    monitor = DriftMonitor()
    monitor.use("old", {"version": "old"})
    monitor.observe(matrix[:1000])
    assert monitor.figures()["flagged"] == [] and set(monitor.figures()["psi"].values()) == {None}

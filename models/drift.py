"""Feature drift: each feature's training distribution (per-value bins, in the manifest) and live PSI.

Every feature is a small integer code (schemas.features.FEATURE_RANGES), so a bin is one value of its
documented range: exact, with no binning choice to tune. PSI = sum((live - train) * ln(live / train)).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from schemas.features import FEATURE_NAMES, FEATURE_RANGES, TARGET_INDEX

PSI_FLAG = 0.2
"""Above this a feature has drifted (the usual rule of thumb: < 0.1 stable, 0.1–0.2 moderate)."""
EPSILON = 1e-4
"""Floor on a bin's share, so an empty bin on either side gives a large but finite PSI."""
WINDOW_ROWS = 10_000
"""Live rows the PSI covers."""
MIN_ROWS = 500
"""Fewer live rows than this and the PSI would be sampling noise: none is reported."""
DRIFT_COLUMNS: tuple[int, ...] = tuple(range(TARGET_INDEX))
"""The 85 input features: every column before CARAVAN (the target, absent or 0 in live traffic), the last."""
assert len(FEATURE_NAMES) - 1 == TARGET_INDEX
_LOW = np.array([FEATURE_RANGES[i][0] for i in DRIFT_COLUMNS], dtype=np.int64)
_WIDTH = np.array([FEATURE_RANGES[i][1] - FEATURE_RANGES[i][0] + 1 for i in DRIFT_COLUMNS], dtype=np.int64)
_OFFSET = np.concatenate([[0], np.cumsum(_WIDTH)[:-1]])
_HIGH = _LOW + _WIDTH - 1
_SHIFT = _OFFSET - _LOW
_BINS = int(_WIDTH.sum())


def value_counts(matrix: np.ndarray) -> np.ndarray:
    """Per feature and value, how many rows have it: one flat vector of all features' bins.

    ~0.3 µs a row: a column slice, one add and one bincount (measured 14x faster than clipping always);
    out-of-range values, which validated traffic never has, are clipped into the end bins.
    """
    x = np.asarray(matrix, dtype=np.int64)[:, : len(DRIFT_COLUMNS)]
    if ((x < _LOW) | (x > _HIGH)).any():
        x = np.clip(x, _LOW, _HIGH)
    return np.bincount((x + _SHIFT).ravel(), minlength=_BINS).astype(np.int64)


def _split(counts: np.ndarray) -> list[np.ndarray]:
    """A flat bin vector as one array per feature."""
    return np.split(counts, np.cumsum(_WIDTH)[:-1])


def training_bins(matrix: np.ndarray) -> dict[str, Any]:
    """The manifest's `drift` block: each input feature's share of rows per value of its range."""
    shares = [c / max(1, c.sum()) for c in _split(value_counts(matrix))]
    return {
        "method": f"PSI over one bin per feature value; flagged above {PSI_FLAG}",
        "rows": len(matrix),
        "features": {
            FEATURE_NAMES[i]: {
                "low": int(FEATURE_RANGES[i][0]),
                "high": int(FEATURE_RANGES[i][1]),
                "shares": [round(float(v), 6) for v in share],
            }
            for i, share in zip(DRIFT_COLUMNS, shares, strict=True)
        },
    }


def backfill_manifest(manifest_path: Path, data_path: Path) -> None:
    """Add the `drift` block to a registered version's manifest from the data it was trained on.

    Written as the registry writes every manifest, so the file's diff is the new block alone.
    """
    import json

    from models import data as D
    from models.registry import atomic_write, manifest_text

    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["drift"] = training_bins(D.load_matrix(data_path))
    atomic_write(manifest_path, manifest_text(manifest))


def psi(expected: Any, actual: Any) -> float:
    """Population stability index of two share vectors over the same bins."""
    e = np.clip(np.asarray(expected, dtype=np.float64), EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), EPSILON, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def reference_of(manifest: dict[str, Any]) -> list[np.ndarray] | None:
    """The training shares per input feature from a manifest, or None when it has no drift block."""
    block = (manifest.get("drift") or {}).get("features")
    if not block:
        return None
    shares = []
    for i, width in zip(DRIFT_COLUMNS, _WIDTH, strict=True):
        entry = block.get(FEATURE_NAMES[i])
        if entry is None or len(entry["shares"]) != width:
            return None
        shares.append(np.asarray(entry["shares"], dtype=np.float64))
    return shares


@dataclass
class DriftMonitor:
    """Rolling window of live feature values (per-batch bin counts) against one version's training bins."""

    window_rows: int = WINDOW_ROWS
    model_version: str | None = None
    reference: list[np.ndarray] | None = None
    _batches: deque[tuple[int, np.ndarray]] = field(default_factory=deque)
    _rows: int = 0
    _cached: dict[str, Any] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def use(self, model_version: str, manifest: dict[str, Any]) -> None:
        """Compare with this version's training bins from now on (the window of live rows is kept)."""
        with self._lock:
            self.model_version, self.reference = model_version, reference_of(manifest)
            self._cached = None

    def observe(self, matrix: np.ndarray) -> None:
        """Add one micro-batch's rows; the oldest batches leave once the window is full."""
        if not len(matrix):
            return
        counts = value_counts(matrix)
        with self._lock:
            self._batches.append((len(matrix), counts))
            self._rows += len(matrix)
            while len(self._batches) > 1 and self._rows - self._batches[0][0] >= self.window_rows:
                self._rows -= self._batches.popleft()[0]
            self._cached = None

    def figures(self) -> dict[str, Any]:
        """Per-feature PSI (None until MIN_ROWS live rows or without training bins), flagged ones first."""
        cached = self._cached
        if cached is not None:
            return cached
        with self._lock:
            rows, reference = self._rows, self.reference
            total = sum((c for _, c in self._batches), np.zeros(_BINS, dtype=np.int64))
        values: dict[str, float | None] = dict.fromkeys((FEATURE_NAMES[i] for i in DRIFT_COLUMNS), None)
        if reference is not None and rows >= MIN_ROWS:
            for i, live, train in zip(DRIFT_COLUMNS, _split(total), reference, strict=True):
                values[FEATURE_NAMES[i]] = round(psi(train, live / rows), 6)
        ranked = sorted(values.items(), key=lambda item: -(item[1] or 0.0))
        figures = {
            "model_version": self.model_version,
            "window_rows": rows,
            "threshold": PSI_FLAG,
            "psi": dict(ranked),
            "flagged": [name for name, value in ranked if value is not None and value > PSI_FLAG],
        }
        self._cached = figures
        return figures

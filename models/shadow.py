"""Live comparison of a shadow model with the active one: top-3, propensity rank and segment agreement."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import spearmanr

from schemas.features import PRODUCTS

if TYPE_CHECKING:
    from models.engine import ScoreBatch

_PRODUCT_CODES = {p.product_id: k for k, p in enumerate(PRODUCTS)}
WINDOW_ROWS = 20_000
"""Rows the rolling comparison covers: enough for a stable rank correlation, few enough to follow changes."""


@dataclass(frozen=True)
class PairedRows:
    """The fields compared, for rows both versions scored: (n, 3) product indices, propensities, labels."""

    active_top3: np.ndarray
    shadow_top3: np.ndarray
    active_propensity: np.ndarray
    shadow_propensity: np.ndarray
    active_segment: np.ndarray
    shadow_segment: np.ndarray

    def __len__(self) -> int:
        """Number of rows."""
        return int(self.active_propensity.shape[0])


def top3_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the share (0, 1/3, 2/3, 1) of a's three products that b also recommends, order ignored."""
    return np.asarray((a[:, :, None] == b[:, None, :]).any(axis=2).mean(axis=1), dtype=np.float64)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman correlation, or None when undefined (fewer than 3 rows or a constant side)."""
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    return float(spearmanr(a, b).statistic)


def compare(rows: PairedRows) -> dict[str, float | None]:
    """The agreement figures over a set of paired rows (None when there are none)."""
    if not len(rows):
        return {"top3_agreement": None, "propensity_spearman": None, "segment_agreement": None}
    return {
        "top3_agreement": float(top3_overlap(rows.active_top3, rows.shadow_top3).mean()),
        "propensity_spearman": rank_correlation(rows.active_propensity, rows.shadow_propensity),
        "segment_agreement": float(np.mean(rows.active_segment == rows.shadow_segment)),
    }


_LABEL_CODES = {"low": 0, "medium": 1, "high": 2}


def pair_records(
    active: Sequence[dict[str, Any] | str], shadow: Sequence[dict[str, Any] | str]
) -> PairedRows:
    """Pair engine records (Prediction fields, or a failure reason) row by row; failed rows are skipped.

    Products and labels become small integers, so the window's figures are plain integer array maths.
    """
    both = [
        (a, s) for a, s in zip(active, shadow, strict=True) if isinstance(a, dict) and isinstance(s, dict)
    ]

    def top3(record: dict[str, Any]) -> list[int]:
        return [_PRODUCT_CODES[r["product_id"]] for r in record["recommendations"]]

    return PairedRows(
        active_top3=np.array([top3(a) for a, _ in both], dtype=np.int64).reshape(-1, 3),
        shadow_top3=np.array([top3(s) for _, s in both], dtype=np.int64).reshape(-1, 3),
        active_propensity=np.array([a["propensity"] for a, _ in both], dtype=np.float64),
        shadow_propensity=np.array([s["propensity"] for _, s in both], dtype=np.float64),
        active_segment=np.array([_LABEL_CODES[a["segment"]["label"]] for a, _ in both], dtype=np.int8),
        shadow_segment=np.array([_LABEL_CODES[s["segment"]["label"]] for _, s in both], dtype=np.int8),
    )


def _label_codes(labels: np.ndarray) -> np.ndarray:
    """Segment labels as the small integers pair_records uses."""
    return np.asarray((labels == "medium") + 2 * (labels == "high"), dtype=np.int8)


def pair_batches(active: ScoreBatch, shadow: ScoreBatch, ok: np.ndarray) -> PairedRows:
    """Pair two whole-batch engine results on the rows where `ok` (both valid): array slicing only."""
    return PairedRows(
        active_top3=np.asarray(active.product_index, dtype=np.int64)[ok].reshape(-1, 3),
        shadow_top3=np.asarray(shadow.product_index, dtype=np.int64)[ok].reshape(-1, 3),
        active_propensity=np.asarray(active.propensity, dtype=np.float64)[ok],
        shadow_propensity=np.asarray(shadow.propensity, dtype=np.float64)[ok],
        active_segment=_label_codes(np.asarray(active.segment_label)[ok]),
        shadow_segment=_label_codes(np.asarray(shadow.segment_label)[ok]),
    )


@dataclass
class ShadowComparison:
    """Rolling agreement over the last WINDOW_ROWS paired rows and the latency the shadow adds per batch."""

    window_rows: int = WINDOW_ROWS
    shadow_version: str | None = None
    active_version: str | None = None
    rows_total: int = 0
    failures: int = 0
    _batches: deque[PairedRows] = field(default_factory=deque)
    _latency: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=200))
    _cached: dict[str, Any] | None = None
    # Read from the metrics thread and the stats task while the event loop adds batches.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self, active: str | None, shadow: str | None) -> None:
        """Start over for a new (active, shadow) pair."""
        with self._lock:
            self.active_version, self.shadow_version = active, shadow
            self.rows_total = self.failures = 0
            self._batches.clear()
            self._latency.clear()
            self._cached = None

    def add(self, rows: PairedRows, active_ms: float, shadow_ms: float) -> None:
        """Record one micro-batch: its paired rows and the active / shadow stage times (ms)."""
        with self._lock:
            self._batches.append(rows)
            self.rows_total += len(rows)
            kept = sum(len(b) for b in self._batches)
            while len(self._batches) > 1 and kept - len(self._batches[0]) >= self.window_rows:
                kept -= len(self._batches.popleft())
            self._latency.append((active_ms, shadow_ms))
            self._cached = None

    def window(self) -> PairedRows:
        """Every paired row of the window, concatenated."""
        with self._lock:
            batches = list(self._batches)
        if not batches:
            empty = np.empty(0)
            return PairedRows(empty.reshape(0, 3), empty.reshape(0, 3), empty, empty, empty, empty)
        names = PairedRows.__dataclass_fields__
        return PairedRows(*(np.concatenate([getattr(b, f) for b in batches]) for f in names))

    def figures(self) -> dict[str, Any]:
        """Everything the comparison reports: versions, rows, agreement and latency (ms, batch medians).

        Computed on demand (a scrape, a stats write) and cached until the next batch, never per batch.
        """
        cached = self._cached
        if cached is not None:
            return cached
        rows = self.window()
        with self._lock:
            latency = np.array(self._latency, dtype=np.float64).reshape(-1, 2)
        active_ms, shadow_ms = (np.median(latency, axis=0).tolist() if len(latency) else [None, None])
        figures = {
            "active_version": self.active_version,
            "shadow_version": self.shadow_version,
            "rows_total": self.rows_total,
            "window_rows": len(rows),
            "failures": self.failures,
            **compare(rows),
            "active_inference_ms": active_ms,
            "added_latency_ms": shadow_ms,
        }
        self._cached = figures
        return figures

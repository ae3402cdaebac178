"""The one reader of a manifest's metrics: the registry route's `ModelMetrics` and the dashboard summary."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from ingest_api.bodies import ModelMetrics
from models.evaluate import top_fraction_count

GAINS_POINTS = 50


def _number(block: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = block.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def metrics_from_manifest(version: str, manifest: dict[str, Any]) -> ModelMetrics:
    """Pick the headline validation metrics out of a manifest's `metrics` block."""
    metrics = manifest.get("metrics") or {}
    propensity = metrics.get("propensity") or {}
    recommender = metrics.get("recommender") or {}
    dqn: dict[str, Any] = recommender["dqn"] if isinstance(recommender.get("dqn"), dict) else recommender
    value = metrics.get("value") or {}
    return ModelMetrics(
        model_version=version,
        accuracy=_number(propensity, "accuracy"),
        precision=_number(propensity, "precision"),
        recall=_number(propensity, "recall"),
        f1=_number(propensity, "f1"),
        auc=_number(propensity, "auc"),
        top20_buyers=_number(propensity, "top20_buyers"),
        top20_recall=_number(propensity, "top20_recall"),
        hr_at_3=_number(dqn, "hr3", "hr_at_3"),
        spearman=_number(value, "spearman"),
        details=metrics,
    )


@functools.lru_cache(maxsize=8)
def gains_curve(validation_path: Path, mtime: float) -> list[dict[str, float]]:
    """Cumulative gains and lift of the propensity model on its validation split, ~50 points."""
    data = json.loads(validation_path.read_text(encoding="utf-8"))["propensity"]
    y, p = np.asarray(data["y"], dtype=float), np.asarray(data["p"], dtype=float)
    if len(y) == 0 or y.sum() == 0:
        return []
    found = np.cumsum(y[np.argsort(-p, kind="stable")]) / y.sum()
    share = np.arange(1, len(y) + 1) / len(y)
    picks = np.linspace(0, len(y) - 1, min(GAINS_POINTS, len(y))).astype(int)
    # The exact top-20 % point, so the curve and the model's "buyers in top 20 %" give one figure.
    picks = np.unique(np.append(picks, max(0, top_fraction_count(len(y)) - 1)))
    return [{"share": round(float(share[i]), 4), "gains": round(float(found[i]), 4),
             "lift": round(float(found[i] / share[i]), 3)} for i in picks]


def model_summary(registry_root: str | None, version: str) -> dict[str, Any]:
    """Headline validation metrics and the gains/lift curve of a registry version."""
    from models.registry import Registry

    registry = Registry(Path(registry_root) if registry_root else None)
    manifest = registry.manifest(version)
    read = metrics_from_manifest(version, manifest)
    propensity = read.details.get("propensity") or {}
    popularity = (read.details.get("recommender") or {}).get("popularity") or {}
    headline = {
        "auc": read.auc, "precision": read.precision, "recall": read.recall, "f1": read.f1,
        "accuracy": read.accuracy, "top20_recall": read.top20_recall, "hr3_dqn": read.hr_at_3,
        "hr3_popularity": _number(popularity, "hr3"), "value_spearman": read.spearman,
    }
    gains: list[dict[str, float]] = propensity.get("gains") or []  # preferred when the manifest carries it
    if not gains:
        name = (manifest.get("artifacts") or {}).get("validation")
        path = registry.path(version) / name if name else None
        if path is not None and path.is_file():
            gains = gains_curve(path, path.stat().st_mtime)
    return {"version": version, "created_at": manifest.get("created_at"), "versions": registry.versions(),
            "metrics": {k: v for k, v in headline.items() if v is not None}, "gains": gains,
            "validation_rows": propensity.get("rows"), "validation_buyers": propensity.get("buyers")}

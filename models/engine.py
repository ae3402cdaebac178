"""Inference engine: one per process, serves the active registry version with NumPy/XGBoost fast paths."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import boosting, dqn
from models.registry import Registry
from schemas.features import FEATURE_COUNT, PRODUCTS

log = logging.getLogger(__name__)
CHUNK_ROWS = 4096
_PRODUCT_IDS: tuple[str, ...] = tuple(p.product_id for p in PRODUCTS)
_PRODUCT_NAMES: tuple[str, ...] = tuple(p.name for p in PRODUCTS)


@dataclass(frozen=True)
class ScoreBatch:
    """Predictions for n rows, all from one model version."""

    model_version: str
    product_index: np.ndarray
    product_probability: np.ndarray
    propensity: np.ndarray
    segment_score: np.ndarray
    segment_label: np.ndarray

    def __len__(self) -> int:
        """Number of rows."""
        return int(self.propensity.shape[0])

    def records(self) -> list[dict[str, Any]]:
        """Per row JSON-ready dict matching the fields of schemas.messages.Prediction."""
        # Plain-list lookups: fancy-indexing the object arrays then tolist() cost ~14 µs per row.
        picks, probs = self.product_index.tolist(), self.product_probability.tolist()
        prop, scores = self.propensity.tolist(), self.segment_score.tolist()
        labels = self.segment_label.tolist()
        version = self.model_version
        return [
            {
                "model_version": version,
                "recommendations": [
                    {"product_id": _PRODUCT_IDS[k], "name": _PRODUCT_NAMES[k], "probability": p}
                    for k, p in zip(row, row_probs, strict=True)
                ],
                "propensity": prop[i],
                "segment": {"label": labels[i], "score": scores[i]},
            }
            for i, (row, row_probs) in enumerate(zip(picks, probs, strict=True))
        ]


@dataclass(frozen=True)
class ModelBundle:
    """Every artifact of one version, fully loaded; immutable so a swap is one reference assignment."""

    version: str
    q_weights: list[tuple[np.ndarray, np.ndarray]]
    calibrator: dict[str, list[float]]
    propensity: list[Any]
    value: Any
    value_grid: np.ndarray
    high_min: float
    medium_min: float
    value_table: boosting.TreeTable

    @classmethod
    def load(cls, directory: Path, manifest: dict[str, Any]) -> ModelBundle:
        """Load a version directory (Keras only to read the Dense weights once)."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        art = manifest["artifacts"]
        model = keras.models.load_model(directory / art["dqn"], compile=False)
        thresholds = manifest["thresholds"]
        return cls(
            version=manifest["version"],
            q_weights=dqn.dense_weights(model),
            calibrator=json.loads((directory / art["dqn_calibration"]).read_text(encoding="utf-8")),
            propensity=[boosting.load(directory / name) for name in art["propensity"]],
            value=boosting.load(directory / art["value"]),
            value_grid=np.asarray(json.loads((directory / art["value_grid"]).read_text(encoding="utf-8"))),
            high_min=float(thresholds["segment_high_min"]),
            medium_min=float(thresholds["segment_medium_min"]),
            value_table=boosting.TreeTable.of(boosting.load(directory / art["value"])),
        )

    def score(self, features: np.ndarray) -> ScoreBatch:
        """Vectorised scoring of an (n, 86) matrix."""
        x = np.asarray(features)
        actions, q = dqn.serve(self.q_weights, x)
        value = boosting.predict_value_served(self.value, self.value_table, x)
        score = boosting.percentile_score(value, self.value_grid)
        label = np.where(score >= self.high_min, "high", np.where(score >= self.medium_min, "medium", "low"))
        return ScoreBatch(
            model_version=self.version,
            product_index=actions.astype(np.int64),
            product_probability=dqn.calibrate(self.calibrator, q).astype(np.float64),
            propensity=np.clip(boosting.predict_propensity(self.propensity, x), 0.0, 1.0),
            segment_score=score.astype(np.float64),
            segment_label=label.astype(str),
        )


class InferenceEngine:
    """Thread-safe scorer over the active registry version, hot-swappable without restart."""

    def __init__(self, registry: Registry, bundle: ModelBundle) -> None:
        self.registry = registry
        self._bundle = bundle
        self._swap_lock = threading.Lock()

    @classmethod
    def load(cls, registry_dir: Path | None = None) -> InferenceEngine:
        """Load the active version (registry: $STREAMSCORE_MODEL_REGISTRY, else models/registry)."""
        registry = Registry(registry_dir)
        return cls(registry, cls._load_version(registry, registry.active_version()))

    @staticmethod
    def _load_version(registry: Registry, version: str) -> ModelBundle:
        return ModelBundle.load(registry.path(version), registry.manifest(version))

    @property
    def model_version(self) -> str:
        """Version currently served."""
        return self._bundle.version

    @property
    def manifest(self) -> dict[str, Any]:
        """Manifest of the version currently served."""
        return self.registry.manifest(self._bundle.version)

    def score(self, features: np.ndarray) -> ScoreBatch:
        """Score (n, 86) range-validated integer rows; every row of the result comes from one version."""
        bundle = self._bundle  # one read: a concurrent swap cannot mix versions within a call
        x = np.asarray(features, dtype=np.int64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != FEATURE_COUNT:
            raise ValueError(f"features must have shape (n, {FEATURE_COUNT}); got {x.shape}")
        if len(x) <= CHUNK_ROWS:
            return bundle.score(x)
        parts = [bundle.score(x[i : i + CHUNK_ROWS]) for i in range(0, len(x), CHUNK_ROWS)]
        return ScoreBatch(
            model_version=bundle.version,
            **{
                f: np.concatenate([getattr(p, f) for p in parts])
                for f in (
                    "product_index",
                    "product_probability",
                    "propensity",
                    "segment_score",
                    "segment_label",
                )
            },
        )

    def refresh(self) -> bool:
        """Re-read the active pointer; if it changed, load that version fully and swap; True if swapped."""
        with self._swap_lock:
            version = self.registry.active_version()
            if version == self._bundle.version:
                return False
            bundle = self._load_version(self.registry, version)
            self._bundle = bundle
            log.info("model version swapped to %s", version)
            return True

    def activate(self, version: str) -> None:
        """Point the registry at `version` and swap to it now."""
        with self._swap_lock:
            bundle = self._load_version(self.registry, version)
            self.registry.activate(version)
            self._bundle = bundle
            log.info("model version activated: %s", version)

    async def watch(self, interval_s: float = 5.0) -> None:
        """Forever: every interval, refresh() in a worker thread (errors logged; the old version stays)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # keep serving the current version on a bad pointer or artifact
                log.exception("model refresh failed")

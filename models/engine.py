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

from models import boosting, dqn, dqn_serving, reasons, tree_shap
from models import propensity as prop
from models import served_propensity as served
from models.data import PROPENSITY_COLUMNS, VALUE_COLUMNS
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
    q_network: dqn_serving.ServingNetwork
    calibrator: dict[str, list[float]]
    propensity: served.ServedPropensity | list[Any]  # additive or boosted (JSON [+UBJ]), or old seed ensemble
    value: Any
    value_grid: np.ndarray
    high_min: float
    medium_min: float
    value_table: boosting.TreeTable
    value_shap: tree_shap.ShapTable | None  # None: a tree too large to table, so XGBoost's pred_contribs
    propensity_shap: list[tree_shap.ShapTable] | None  # for an XGBoost ensemble whose trees all fit

    @classmethod
    def load(cls, directory: Path, manifest: dict[str, Any]) -> ModelBundle:
        """Load a version directory (Keras only to read the Dense weights once)."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        art = manifest["artifacts"]
        model = keras.models.load_model(directory / art["dqn"], compile=False)
        thresholds = manifest["thresholds"]
        propensity = _load_propensity(directory, art["propensity"])
        value = boosting.load(directory / art["value"])
        q_weights = dqn.dense_weights(model)
        return cls(
            version=manifest["version"],
            q_weights=q_weights,
            q_network=dqn_serving.ServingNetwork.of(q_weights),
            calibrator=json.loads((directory / art["dqn_calibration"]).read_text(encoding="utf-8")),
            propensity=propensity,
            value=value,
            value_grid=np.asarray(json.loads((directory / art["value_grid"]).read_text(encoding="utf-8"))),
            high_min=float(thresholds["segment_high_min"]),
            medium_min=float(thresholds["segment_medium_min"]),
            value_table=boosting.TreeTable.of(value),
            value_shap=_shap_table(value),
            propensity_shap=_ensemble_shap_tables(propensity),
        )

    def value_contributions(self, features: np.ndarray) -> np.ndarray:
        """(n, len(VALUE_COLUMNS)) TreeSHAP contribution of each value column to the value prediction."""
        x = np.asarray(features)[:, list(VALUE_COLUMNS)]
        if self.value_shap is not None:
            return self.value_shap.contributions(x)
        return _tree_contributions(self.value, x)

    def reasons(self, features: np.ndarray) -> list[dict[str, list[dict[str, Any]]]]:
        """Per row the Prediction `reasons`: top 3 up and down for propensity and the value segment."""
        x = np.asarray(features)
        return reasons.reason_records(
            x,
            (self.propensity_contributions(x), PROPENSITY_COLUMNS),
            (self.value_contributions(x), VALUE_COLUMNS),
        )

    def score(self, features: np.ndarray) -> ScoreBatch:
        """Vectorised scoring of an (n, 86) matrix."""
        x = np.asarray(features)
        actions, q = dqn_serving.serve(self.q_network, x)
        value = boosting.predict_value_served(self.value, self.value_table, x)
        score = boosting.percentile_score(value, self.value_grid)
        label = np.where(score >= self.high_min, "high", np.where(score >= self.medium_min, "medium", "low"))
        return ScoreBatch(
            model_version=self.version,
            product_index=actions.astype(np.int64),
            product_probability=dqn.calibrate(self.calibrator, q).astype(np.float64),
            propensity=np.clip(self.predict_propensity(x), 0.0, 1.0),
            segment_score=score.astype(np.float64),
            segment_label=label.astype(str),
        )

    def predict_propensity(self, features: np.ndarray) -> np.ndarray:
        """P(caravan) per row of an (n, 86) matrix, whichever kind of propensity model the version has."""
        if isinstance(self.propensity, prop.AdditivePropensity | served.BoostedPropensity):
            return self.propensity.predict(features)
        return boosting.predict_propensity(self.propensity, features)

    def propensity_contributions(self, features: np.ndarray) -> np.ndarray:
        """(n, 85) logit contributions per feature (reason codes); XGBoost versions use pred_contribs."""
        if isinstance(self.propensity, prop.AdditivePropensity):
            return self.propensity.contributions(features)
        if isinstance(self.propensity, served.BoostedPropensity):
            return _boosted_contributions(self.propensity, features, self.propensity_shap)
        x = np.asarray(features)[:, list(PROPENSITY_COLUMNS)]
        if self.propensity_shap is not None:
            return np.asarray(np.mean([table.contributions(x) for table in self.propensity_shap], axis=0))
        return np.asarray(np.mean([_tree_contributions(b, x) for b in self.propensity], axis=0))


def _load_propensity(directory: Path, artifact: str | list[str]) -> served.ServedPropensity | list[Any]:
    """A JSON additive or boosted model (current) or a list of XGBoost .ubj boosters (older versions)."""
    if isinstance(artifact, str):
        return served.load(directory, artifact)
    return [boosting.load(directory / name) for name in artifact]


def _shap_table(booster: Any) -> tree_shap.ShapTable | None:
    """The booster's TreeSHAP table, or None (logged) when a tree does not fit one."""
    try:
        return tree_shap.ShapTable.of(booster)
    except tree_shap.TreeTooLarge as error:
        log.info("TreeSHAP by XGBoost pred_contribs: %s", error)
        return None


def _ensemble_shap_tables(
    propensity: served.ServedPropensity | list[Any],
) -> list[tree_shap.ShapTable] | None:
    """A table per booster of an XGBoost propensity ensemble; None if additive or a tree is too large."""
    if isinstance(propensity, prop.AdditivePropensity):
        return None
    if isinstance(propensity, served.BoostedPropensity):
        table = _shap_table(propensity.booster)
        return [table] if table is not None else None
    tables = [_shap_table(booster) for booster in propensity]
    fitted = [table for table in tables if table is not None]
    return fitted if len(fitted) == len(tables) else None


def _boosted_contributions(
    model: served.BoostedPropensity, features: np.ndarray, shap: list[tree_shap.ShapTable] | None
) -> np.ndarray:
    """(n, 85) reason-code contributions of a boosted model in calibrated-logit units.

    XGBoost: the booster's TreeSHAP times the Platt slope (exact for the calibrated logit). Ensemble: its
    logistic member's terms times the slope; a rank average has no exact additive attribution.
    """
    x = np.asarray(features)
    if model.family == "ensemble" and model.additive is not None:
        return model.platt[0] * model.additive.contributions(x)
    columns = x[:, list(PROPENSITY_COLUMNS)]
    tree = shap[0].contributions(columns) if shap else _tree_contributions(model.booster, columns)
    return np.asarray(model.platt[0] * tree)


def _score_bundle(bundle: ModelBundle, features: np.ndarray) -> ScoreBatch:
    """Score (n, 86) rows with one bundle, in chunks of CHUNK_ROWS."""
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
            for f in ("product_index", "product_probability", "propensity", "segment_score", "segment_label")
        },
    )


def _tree_contributions(booster: Any, x: np.ndarray) -> np.ndarray:
    """TreeSHAP contributions of a booster on its own columns, without the bias column."""
    import xgboost as xgb

    matrix = xgb.DMatrix(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(booster.predict(matrix, pred_contribs=True), dtype=np.float64)[:, :-1]


class InferenceEngine:
    """Thread-safe scorer over the active registry version, hot-swappable without restart."""

    def __init__(self, registry: Registry, bundle: ModelBundle, *, follow_shadow: bool = False) -> None:
        self.registry = registry
        self.follow_shadow = follow_shadow  # the scorer loads the shadow version too; the API does not
        self._bundle = bundle
        self._shadow: ModelBundle | None = None
        self._swap_lock = threading.Lock()

    @classmethod
    def load(cls, registry_dir: Path | None = None, *, follow_shadow: bool = False) -> InferenceEngine:
        """Load the active version (registry: $STREAMSCORE_MODEL_REGISTRY, else models/registry).

        With follow_shadow, the registry's shadow version is loaded too, and followed by refresh().
        """
        registry = Registry(registry_dir)
        bundle = cls._load_version(registry, registry.active_version())
        engine = cls(registry, bundle, follow_shadow=follow_shadow)
        engine.refresh()
        return engine

    @classmethod
    def pinned(cls, version: str, registry_dir: Path | None = None) -> InferenceEngine:
        """An engine on one version that never follows the pointers (replays); KeyError when unknown."""
        registry = Registry(registry_dir)
        return cls(registry, cls._load_version(registry, version))

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

    @property
    def shadow_version(self) -> str | None:
        """Version scored alongside the active one (never served), or None."""
        shadow = self._shadow
        return shadow.version if shadow is not None else None

    def score(self, features: np.ndarray) -> ScoreBatch:
        """Score (n, 86) range-validated integer rows; every row of the result comes from one version."""
        return _score_bundle(self._bundle, features)  # one read: a swap cannot mix versions in a call

    def reasons(self, features: np.ndarray) -> list[dict[str, list[dict[str, Any]]]]:
        """Reason codes of (n, 86) rows under the active version (see ModelBundle.reasons)."""
        x = np.asarray(features, dtype=np.int64)
        return self._bundle.reasons(x[None, :] if x.ndim == 1 else x)

    def score_shadow(self, features: np.ndarray) -> ScoreBatch | None:
        """Score the rows with the shadow version, or None when there is no shadow."""
        shadow = self._shadow
        return _score_bundle(shadow, features) if shadow is not None else None

    def refresh(self) -> bool:
        """Re-read the `active` and `shadow` pointers; load whatever changed fully, then swap; True if so."""
        with self._swap_lock:
            version = self.registry.active_version()
            wanted = self.registry.shadow_version() if self.follow_shadow else None
            wanted = None if wanted == version else wanted
            swapped = False
            if version != self._bundle.version:
                shadow = self._shadow
                # A promoted shadow is already loaded: the swap is one assignment.
                reuse = shadow is not None and shadow.version == version
                self._bundle = shadow if reuse and shadow else self._load_version(self.registry, version)
                log.info("model version swapped to %s", version)
                swapped = True
            if wanted != self.shadow_version:
                self._shadow = self._load_version(self.registry, wanted) if wanted else None
                log.info("shadow model version set to %s", wanted)
                swapped = True
            return swapped

    def activate(self, version: str) -> None:
        """Point the registry at `version` and swap to it now."""
        with self._swap_lock:
            bundle = self._load_version(self.registry, version)
            self.registry.activate(version)
            self._bundle = bundle
            if self.shadow_version == version:
                self._shadow = None
            log.info("model version activated: %s", version)

    def set_shadow(self, version: str | None) -> None:
        """Point the registry's shadow at `version` (None clears it) and load it now."""
        with self._swap_lock:
            if version is None:
                self.registry.clear_shadow()
                self._shadow = None
            else:
                bundle = self._load_version(self.registry, version)  # proves it loads before pointing at it
                self.registry.set_shadow(version)
                self._shadow = bundle if self.follow_shadow else None
            log.info("shadow model version set to %s", version)

    def promote(self) -> str:
        """Make the shadow active (registry and this process) and stop shadowing; returns the version."""
        with self._swap_lock:
            shadow = self._shadow
            version = self.registry.shadow_version()
            if version is None:
                raise LookupError("no shadow version to promote")
            bundle = shadow if shadow is not None and shadow.version == version else None
            bundle = bundle or self._load_version(self.registry, version)
            self.registry.promote()
            self._bundle, self._shadow = bundle, None
            log.info("shadow model version promoted: %s", version)
            return version

    async def watch(self, interval_s: float = 5.0) -> None:
        """Forever: every interval, refresh() in a worker thread (errors logged; the old version stays)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # keep serving the current version on a bad pointer or artifact
                log.exception("model refresh failed")

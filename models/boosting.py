"""XGBoost models: caravan propensity (classifier), annual-premium value (regressor), multi-class baseline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from models.data import PROPENSITY_COLUMNS, VALUE_COLUMNS

THREADS = 2
SERVING_THREADS = 1  # measured: 2 threads cost 20x more per call when the cores are shared
PROPENSITY_GRID: dict[str, tuple[Any, ...]] = {
    "max_depth": (1, 2, 3),
    "min_child_weight": (1, 10),
}
PROPENSITY_BASE: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "auc",
    "eta": 0.03,
    "subsample": 0.8,
    "colsample_bytree": 0.5,
    "reg_lambda": 10.0,
    "nthread": THREADS,
}
VALUE_PARAMS: dict[str, Any] = {
    "objective": "reg:squarederror",
    "eta": 0.05,
    "max_depth": 3,
    "min_child_weight": 5,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "reg_lambda": 5.0,
    "nthread": THREADS,
}
VALUE_ROUNDS = 600


@dataclass(frozen=True)
class PropensityChoice:
    """Hyper-parameters picked by stratified k-fold CV on the training part."""

    params: dict[str, Any]
    rounds: int
    cv_auc: float
    grid: list[dict[str, Any]]


def select_propensity(x: np.ndarray, y: np.ndarray, seed: int, folds: int = 5) -> PropensityChoice:
    """Pick depth/min_child_weight and the number of rounds by k-fold CV AUC (early stopping)."""
    matrix = xgb.DMatrix(x[:, list(PROPENSITY_COLUMNS)].astype(np.float32), label=y)
    best: tuple[float, dict[str, Any], int] | None = None
    grid: list[dict[str, Any]] = []
    for values in product(*PROPENSITY_GRID.values()):
        params = {**PROPENSITY_BASE, **dict(zip(PROPENSITY_GRID, values, strict=True)), "seed": seed}
        result = xgb.cv(
            params,
            matrix,
            num_boost_round=800,
            nfold=folds,
            stratified=True,
            early_stopping_rounds=100,
            seed=seed,
        )
        auc, rounds = float(np.asarray(result["test-auc-mean"])[-1]), len(result)
        grid.append(
            {**dict(zip(PROPENSITY_GRID, values, strict=True)), "rounds": rounds, "cv_auc": round(auc, 5)}
        )
        if best is None or auc > best[0]:
            best = (auc, params, rounds)
    assert best is not None
    return PropensityChoice(params=best[1], rounds=best[2], cv_auc=best[0], grid=grid)


def fit_propensity(
    x: np.ndarray, y: np.ndarray, choice: PropensityChoice, seeds: list[int]
) -> list[xgb.Booster]:
    """Train one booster per seed (averaged at prediction time) on columns 1-85."""
    matrix = xgb.DMatrix(x[:, list(PROPENSITY_COLUMNS)].astype(np.float32), label=y)
    return [xgb.train({**choice.params, "seed": s}, matrix, num_boost_round=choice.rounds) for s in seeds]


VALUE_TARGETS = ("rank", "log1p")


def value_target(premium: np.ndarray, kind: str = "rank") -> np.ndarray:
    """Regression target: mid-rank of the annual premium in (0, 1] (rank), or log(1 + premium) (log1p)."""
    from scipy.stats import rankdata

    if kind == "log1p":
        return np.log1p(np.asarray(premium, dtype=np.float64))
    if kind != "rank":
        raise ValueError(f"unknown value target {kind}")
    return np.asarray(rankdata(premium) / len(premium), dtype=np.float64)


def fit_value(
    x: np.ndarray,
    premium: np.ndarray,
    seed: int,
    rounds: int = VALUE_ROUNDS,
    target: str = "rank",
    threads: int = 1,
    trees: dict[str, Any] | None = None,
) -> xgb.Booster:
    """Train the annual-premium regressor on columns 1-43 and 65-86 (the score is a rank of its output).

    `trees` overrides VALUE_PARAMS (e.g. max_depth). One thread by default: on shared cores 2 XGBoost threads
    made the many small CV fits several times slower.
    """
    matrix = xgb.DMatrix(x[:, list(VALUE_COLUMNS)].astype(np.float32), label=value_target(premium, target))
    params = {**VALUE_PARAMS, **(trees or {}), "seed": seed, "nthread": threads}
    return xgb.train(params, matrix, num_boost_round=rounds)


def fit_multiclass(x: np.ndarray, labels: np.ndarray, seed: int, rounds: int = 150) -> xgb.Booster:
    """Baseline recommender: softmax over the 22 products from the (hidden-product) state."""
    params = {
        "objective": "multi:softprob",
        "num_class": 22,
        "eta": 0.1,
        "max_depth": 4,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "nthread": THREADS,
        "seed": seed,
    }
    return xgb.train(params, xgb.DMatrix(x.astype(np.float32), label=labels), num_boost_round=rounds)


def predict(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """Fast in-place prediction on a float32 matrix."""
    return np.asarray(booster.inplace_predict(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64)


def predict_propensity(boosters: list[xgb.Booster], features: np.ndarray) -> np.ndarray:
    """Mean P(caravan) over the seed ensemble from the full 86-column matrix (column 86 ignored)."""
    x = features[:, : len(PROPENSITY_COLUMNS)]
    return np.mean([predict(b, x) for b in boosters], axis=0)


def predict_value(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    """Predicted premium rank (0-1) from the full 86-column matrix."""
    return predict(booster, features[:, list(VALUE_COLUMNS)])


SMALL_BATCH = 8
"""Up to this many rows the NumPy tree walk beats XGBoost's fixed ~0.2-0.3 ms per predict call (measured:
1 row 75 vs 273 µs; at 16 rows XGBoost is ahead)."""


@dataclass(frozen=True)
class TreeTable:
    """A regression booster's trees as flat arrays, walked level by level for all trees at once.

    Same splits (float32 `x < threshold`), same float32 leaf values, summed tree by tree in float32 from
    the base score, as XGBoost's CPU predictor does; for the few-row calls of the sync path.
    """

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray
    depth: int
    base: np.float32

    @classmethod
    def of(cls, booster: xgb.Booster) -> TreeTable:
        """Flatten a gbtree regression booster without categorical splits or missing values."""
        learner = json.loads(booster.save_raw("json"))["learner"]
        trees = learner["gradient_booster"]["model"]["trees"]
        roots: list[int] = []
        feature: list[int] = []
        left: list[int] = []
        right: list[int] = []
        threshold: list[float] = []
        leaf: list[float] = []
        depth = 0
        for tree in trees:
            offset = len(feature)
            roots.append(offset)
            lefts, rights = tree["left_children"], tree["right_children"]
            for node, (lo, hi) in enumerate(zip(lefts, rights, strict=True)):
                is_leaf = lo == -1
                feature.append(0 if is_leaf else tree["split_indices"][node])
                threshold.append(tree["split_conditions"][node])
                left.append(offset + (node if is_leaf else lo))
                right.append(offset + (node if is_leaf else hi))
                leaf.append(tree["split_conditions"][node] if is_leaf else 0.0)
            depth = max(depth, _depth(lefts, rights))
        base = float(str(learner["learner_model_param"]["base_score"]).strip("[]"))
        return cls(
            np.array(roots, dtype=np.int64), np.array(feature, dtype=np.int64),
            np.array(threshold, dtype=np.float32), np.array(left, dtype=np.int64),
            np.array(right, dtype=np.int64), np.array(leaf, dtype=np.float32), depth, np.float32(base),
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Margins of the rows of a float32 matrix, as float64."""
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots)))
        for _ in range(self.depth):
            go_left = x[rows, self.feature[node]] < self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        values = np.empty((len(x), len(self.roots) + 1), dtype=np.float32)
        values[:, 0] = self.base
        values[:, 1:] = self.leaf[node]
        # cumsum adds left to right (not pairwise): base, then tree by tree in float32, like XGBoost.
        return np.cumsum(values, axis=1, dtype=np.float32)[:, -1].astype(np.float64)


def _depth(lefts: list[int], rights: list[int], node: int = 0) -> int:
    if lefts[node] == -1:
        return 0
    return 1 + max(_depth(lefts, rights, lefts[node]), _depth(lefts, rights, rights[node]))


def predict_value_served(booster: xgb.Booster, table: TreeTable, features: np.ndarray) -> np.ndarray:
    """predict_value, through the tree table for small batches."""
    if len(features) > SMALL_BATCH:
        return predict_value(booster, features)
    return table.predict(np.ascontiguousarray(features[:, list(VALUE_COLUMNS)], dtype=np.float32))


def percentile_score(prediction: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """0-100 mid-rank percentile of predictions against the sorted training-prediction quantile grid."""
    low = np.searchsorted(grid, prediction, side="left")
    high = np.searchsorted(grid, prediction, side="right")
    return np.clip(100.0 * (low + high) / (2.0 * len(grid)), 0.0, 100.0)


def quantile_grid(train_prediction: np.ndarray, points: int = 1001) -> np.ndarray:
    """Quantiles of the training predictions at `points` evenly spaced levels."""
    return np.quantile(train_prediction, np.linspace(0.0, 1.0, points))


def save(booster: xgb.Booster, path: Path) -> None:
    """Save in native UBJ format (never pickle)."""
    booster.save_model(str(path))


def load(path: Path) -> xgb.Booster:
    """Load a native model and pin it to the serving thread count."""
    booster = xgb.Booster()
    booster.load_model(str(path))
    booster.set_param({"nthread": SERVING_THREADS})
    return booster

"""Supervised rankers on the DQN's (customer, hidden product) pairs, through the recommender's nested
protocol: the ceiling the DQN's HR@3 is read against (same outer folds, same hiding, same evaluation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models import data as D
from models.folds import outer_splits, twin_groups

MODELS = ("xgboost_multiclass", "logistic", "mlp", "logistic_xgboost_mean")
ScoreFn = Callable[[np.ndarray], np.ndarray]


def training_pairs(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (customer, owned product) pair as (encoded visible state, hidden product): the DQN's episodes."""
    from models import dqn

    rows, hidden = dqn.all_pairs(features)
    visible = dqn.hide(features[rows], hidden)
    return dqn.encode(visible, np.zeros((len(rows), dqn.N_ACTIONS), dtype=bool)), hidden


def static_scores(predict: ScoreFn) -> ScoreFn:
    """A per-state scorer that ignores the already-recommended mask (the rankers never saw it set)."""
    from models import dqn

    def score(state: np.ndarray) -> np.ndarray:
        clean = np.array(state, dtype=np.float32, copy=True)
        clean[:, dqn.RECOMMENDED_OFFSET :] = 0.0
        return predict(clean)

    return score


def _proba(model: Any) -> ScoreFn:
    """scikit-learn classifier -> (n, 22) class probabilities (0 for a product absent from training)."""
    from models import dqn

    def predict(x: np.ndarray) -> np.ndarray:
        p = np.zeros((len(x), dqn.N_ACTIONS))
        p[:, model.classes_] = model.predict_proba(x)
        return p

    return predict


def fit(name: str, x: np.ndarray, hidden: np.ndarray, seed: int, fitted: dict[str, ScoreFn]) -> ScoreFn:
    """One ranker on the training pairs; returns its (n, 22) score function (an ensemble reuses `fitted`).

    scikit-learn's BLAS runs on one thread: on shared cores more threads made the fits 5-10x slower.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _fit(name, x, hidden, seed, fitted)


def _fit(name: str, x: np.ndarray, hidden: np.ndarray, seed: int, fitted: dict[str, ScoreFn]) -> ScoreFn:
    from models import boosting

    if name == "xgboost_multiclass":  # the report's baseline, same settings
        booster = boosting.fit_multiclass(x, hidden, seed)
        return lambda s: boosting.predict(booster, s).reshape(len(s), -1)
    if name == "logistic":
        from sklearn.linear_model import LogisticRegression

        return _proba(LogisticRegression(C=1.0, max_iter=3000).fit(x, hidden))
    if name == "mlp":
        from sklearn.neural_network import MLPClassifier

        mlp = MLPClassifier(
            (128, 64), alpha=1e-3, early_stopping=True, n_iter_no_change=10, random_state=seed
        )
        return _proba(mlp.fit(x, hidden))
    if name == "logistic_xgboost_mean":
        parts = [fitted.get(n) or fit(n, x, hidden, seed, fitted) for n in ("logistic", "xgboost_multiclass")]
        return lambda s: np.mean([p(s) for p in parts], axis=0)
    raise ValueError(f"unknown ranker {name}")


def outer_cv(
    matrix: np.ndarray,
    folds: int,
    repeats: int,
    seed: int,
    models: Sequence[str] = MODELS,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Per outer fold (recommender_cv's folds and seeds): each ranker fitted on the training rows' pairs, HR@3
    on the test rows by `recommender_cv.evaluate` (one random hidden product, and all pairs)."""
    from models import recommender_cv

    out: list[dict[str, Any]] = []
    for repeat, f, train, test in outer_splits(
        matrix[:, D.TARGET_INDEX], twin_groups(matrix), folds, repeats, seed
    ):
        fit_seed = 1000 * repeat + f
        x, hidden = training_pairs(matrix[train])
        popularity = D.owned(matrix[train]).mean(axis=0)
        row: dict[str, Any] = {"repeat": repeat, "fold": f}
        fitted: dict[str, ScoreFn] = {}
        for name in models:
            fitted[name] = fit(name, x, hidden, fit_seed, fitted)
            scorer = static_scores(fitted[name])
            metrics, _, _ = recommender_cv.evaluate(matrix[test], fit_seed, scorer, popularity)
            for protocol, block in (("one_random", metrics), ("all_pairs", metrics["all_pairs"])):
                for key in ("hr3", "hr3_outside_top3"):
                    # evaluate reports the scorer it is given under "dqn"
                    row[f"{protocol}.{name}.{key}"] = block["dqn"][key]
                    row[f"{protocol}.popularity.{key}"] = block["popularity"][key]
            if progress:
                progress(
                    f"fold {len(out) + 1}/{folds * repeats} {name}: HR@3 {row[f'one_random.{name}.hr3']:.3f} "
                    f"(outside top 3 {row[f'one_random.{name}.hr3_outside_top3']:.3f})"
                )
        out.append(row)
    return out

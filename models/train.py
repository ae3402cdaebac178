"""Training pipeline: split, fit the three models, validate, and write a new registry version."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models import data as D
from models import drift
from models.registry import Registry, new_version_name

VALIDATION_FRACTION = 0.2
DEFAULT_THRESHOLDS = {"segment_high_min": 67.0, "segment_medium_min": 34.0}
PROPENSITY_ARTIFACT = "propensity.json"
Progress = Callable[[str, int], None]


def configure_runtime(threads: int = 2) -> None:
    """Pin TF/XGBoost threads and request deterministic TF ops (call before importing tensorflow)."""
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # already initialised in this process
    tf.config.experimental.enable_op_determinism()


def train(
    data_path: Path | None = None,
    seed: int = 0,
    registry_dir: Path | None = None,
    subsample: int | None = None,
    dqn_overrides: dict[str, Any] | None = None,
    final_fit: str = "all",
    activate: bool = True,
    version: str | None = None,
    cv_repeats: int | None = None,
    recommender_cv_repeats: int = 1,
    value_cv_repeats: int | None = None,
    thresholds: dict[str, float] | None = None,
    progress: Progress | None = None,
) -> str:
    """Train every model, validate, write registry/<version>/; activate it only if the propensity gate passes.

    The propensity model comes from the nested-CV selection procedure (models/selection.py); its nested
    estimate is compared with the active version's on the same outer folds (models/gate.py). The value model's
    procedure (models/value_cv.py) and the recommender (models/recommender_cv.py) are estimated on the same
    outer folds: `value_cv_repeats` (default `cv_repeats`; 0: skip) and `recommender_cv_repeats` (0: skip).
    """
    configure_runtime()
    import keras
    import sklearn
    import tensorflow as tf
    import xgboost as xgb

    from models import boosting, cv, dqn, gate, recommender_cv, selection, value_cv
    from models import served_propensity as served
    from models.evaluate import propensity_metrics, spearman
    from models.folds import twin_groups

    tick: Progress = progress or (lambda _stage, _n: None)
    started = time.perf_counter()
    path = D.resolve_data_path(data_path)
    matrix = D.load_matrix(path)
    if subsample is not None and subsample < len(matrix):
        matrix = matrix[np.sort(np.random.default_rng(seed).choice(len(matrix), subsample, replace=False))]
    y = matrix[:, D.TARGET_INDEX]
    midpoints = D.band_midpoints(path.with_name("lookups.json"))
    premium = D.annual_premium(matrix, midpoints)
    tr, va = D.stratified_split(y, VALIDATION_FRACTION, seed)
    groups = twin_groups(matrix)
    registry = Registry(registry_dir)
    tick("data", 1)

    nested = gate.nested_and_gate(
        matrix,
        registry,
        cv_repeats or cv.OUTER_REPEATS,
        progress=lambda _message: tick("nested cv", 0),
    )
    repeats = cv_repeats or cv.OUTER_REPEATS
    value_repeats = repeats if value_cv_repeats is None else value_cv_repeats
    value_folds = (
        value_cv.outer_cv(matrix, premium, cv.OUTER_FOLDS, value_repeats, cv.OUTER_SEED)
        if value_repeats > 0
        else []
    )
    tick("value cv", 1)
    config = dqn.DQNConfig(**(dqn_overrides or {}))
    rec_folds = (
        recommender_cv.outer_cv(matrix, cv.OUTER_FOLDS, recommender_cv_repeats, cv.OUTER_SEED, config)
        if recommender_cv_repeats > 0
        else []
    )
    tick("dqn cv", 1)
    procedure = selection.select_and_fit(matrix[tr], y[tr], groups[tr], seed)
    prop_model = served.from_procedure(procedure)
    tick("propensity", 1)
    p_train = prop_model.predict(matrix[tr])
    threshold = float(np.quantile(p_train, 0.8))
    p_val = prop_model.predict(matrix[va])
    prop_metrics = propensity_metrics(y[va], p_val, threshold)
    tick("propensity", 1)

    value_proc = value_cv.select_and_fit(matrix[tr], premium[tr], groups[tr], seed)
    value_metrics = {
        "spearman": spearman(value_proc.score(matrix[va]), premium[va]),
        "target": "mid-rank of annual premium or log1p, and rounds, by inner grouped CV (1-SE rule)",
    }
    tick("value", 1)

    q_model, dqn_stats = dqn.train_dqn(matrix[tr], seed, config, progress=lambda n: tick("dqn", n))
    weights = dqn.dense_weights(q_model)
    popularity = D.owned(matrix[tr]).mean(axis=0)
    rows, hidden = dqn.all_pairs(matrix[tr])  # same (customer, hidden product) pairs the DQN trains on
    visible = dqn.hide(matrix[tr][rows], hidden)
    multiclass = boosting.fit_multiclass(dqn.encode(visible, np.zeros((len(rows), 22), bool)), hidden, seed)
    rec_metrics, q_val, hit_val = recommender_cv.evaluate(
        matrix[va], seed, lambda s: dqn.forward(weights, s), popularity, multiclass
    )
    calibrator = dqn.fit_calibrator(q_val, hit_val)
    tick("recommender", 1)

    if final_fit == "all":
        procedure = selection.select_and_fit(matrix, y, groups, seed)
        prop_model = served.from_procedure(procedure)
        threshold = float(np.quantile(prop_model.predict(matrix), 0.8))
        value_proc = value_cv.select_and_fit(matrix, premium, groups, seed)

    name = version or new_version_name()
    staging = registry.root / f".staging-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    q_model.save(staging / "dqn.keras")
    served.save(prop_model, staging, PROPENSITY_ARTIFACT)
    boosting.save(value_proc.booster, staging / "value.ubj")
    grid_values = [round(float(v), 6) for v in value_proc.grid]
    (staging / "value_grid.json").write_text(json.dumps(grid_values), encoding="utf-8")
    (staging / "dqn_calibration.json").write_text(json.dumps(calibrator), encoding="utf-8")
    metrics = {"propensity": prop_metrics, "recommender": rec_metrics, "value": value_metrics}
    validation = {
        "metrics": metrics,
        "propensity": {"y": y[va].tolist(), "p": [round(float(v), 6) for v in p_val]},
    }
    (staging / "validation.json").write_text(json.dumps(validation), encoding="utf-8")
    manifest = _manifest(
        name,
        seed,
        path,
        len(matrix),
        len(tr),
        len(va),
        final_fit,
        config,
        dqn_stats,
        {**_propensity_block(prop_model, procedure.report), **nested},
        {**DEFAULT_THRESHOLDS, **(thresholds or {}), "propensity_decision": threshold},
        metrics,
        calibrator,
        time.perf_counter() - started,
        {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "xgboost": xgb.__version__,
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "python": platform.python_version(),
        },
        subsample,
    )
    manifest["value"]["selection"] = value_proc.report
    manifest["value"]["rounds"] = int(value_proc.report["chosen"].split("/")[1])
    if value_folds:
        value_summary = value_cv.summarise(value_folds, cv.OUTER_FOLDS)
        manifest["value"]["nested_cv"] = {"summary": value_summary, "folds": value_folds}
    if rec_folds:
        manifest["dqn"]["nested_cv"] = {
            "summary": recommender_cv.summarise(rec_folds, cv.OUTER_FOLDS),
            "folds": rec_folds,
            "note": recommender_cv.NOTE,
        }
    manifest["drift"] = drift.training_bins(matrix)  # each feature's training distribution
    registry.write_manifest(staging, manifest)
    target = registry.root / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    passed = bool(nested["gate"]["passed"])
    if activate and passed:
        registry.activate(name)
    return name


def _propensity_block(model: Any, report: dict[str, Any]) -> dict[str, Any]:
    """The manifest's description of the shipped propensity model and how it was chosen."""
    from models import propensity, served_propensity

    additive = isinstance(model, propensity.AdditivePropensity)
    block: dict[str, Any] = {
        "kind": "additive_logistic" if additive else "boosted",
        "format": propensity.FORMAT if additive else served_propensity.FORMAT,
        "family": model.info["family"],
        "config": model.info["config"],
        "calibration": "Platt (sigmoid of a * score + b) fitted on the inner out-of-fold scores"
        + ("; folded into the coefficients" if additive else ""),
        "platt": model.info["platt"],
        "selection": report,
        "selection_rule": "one-standard-error rule on inner grouped 5-fold AUC, toward the simpler model",
    }
    if additive:
        block["terms"] = [f"{t['name']}:{t['kind']}" for t in model.terms]
    return block


def _manifest(
    name: str,
    seed: int,
    path: Path,
    rows: int,
    n_train: int,
    n_val: int,
    final_fit: str,
    config: Any,
    dqn_stats: dict[str, Any],
    propensity_block: dict[str, Any],
    thresholds: dict[str, float],
    metrics: dict[str, Any],
    calibrator: dict[str, Any],
    seconds: float,
    libraries: dict[str, str],
    subsample: int | None,
) -> dict[str, Any]:
    """Assemble manifest.json."""
    from models import boosting, dqn
    from schemas.features import FEATURE_NAMES, FEATURE_RANGES, PRODUCTS

    return {
        "version": name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "training_seconds": round(seconds, 1),
        "data": {
            "path": path.name,  # no machine path in a shipped manifest
            "sha256": D.sha256_file(path),
            "rows": rows,
            "subsample": subsample,
            "train_rows": n_train,
            "validation_rows": n_val,
            "validation_fraction": VALIDATION_FRACTION,
            "split": "stratified on CARAVAN, seeded",
        },
        "final_fit": {
            "propensity": "all rows" if final_fit == "all" else "train split",
            "value": "all rows" if final_fit == "all" else "train split",
            "dqn": "train split (validation split used for calibration and metrics)",
        },
        "feature_schema": {
            "names": list(FEATURE_NAMES),
            "ranges": [list(r) for r in FEATURE_RANGES],
            "products": [p.product_id for p in PRODUCTS],
            "propensity_columns": [FEATURE_NAMES[i] for i in D.PROPENSITY_COLUMNS],
            "value_columns": [FEATURE_NAMES[i] for i in D.VALUE_COLUMNS],
        },
        "artifacts": {
            "dqn": "dqn.keras",
            "dqn_calibration": "dqn_calibration.json",
            "propensity": PROPENSITY_ARTIFACT,
            "value": "value.ubj",
            "value_grid": "value_grid.json",
            "validation": "validation.json",
        },
        "dqn": {
            "config": config.as_dict(),
            "stats": dqn_stats,
            "state_dim": dqn.STATE_DIM,
            "state": "86 values / documented max, one-hot MOSTYPE(41) and MOSHOOFD(10), owned flags (22), "
            "mask of products already recommended in the episode (22)",
            "reward": "1 when the recommended product is the hidden one (episode ends), else 0; "
            "up to 3 steps; owned and already-recommended actions masked",
            "gamma_rationale": "myopic ranking is optimal for finding one hidden item; a small gamma keeps "
            "Q close to the immediate hit probability (low-variance targets) while "
            "still crediting later steps",
            "algorithm": "Double DQN, target network, uniform replay buffer, epsilon-greedy, Huber loss, "
            f"cosine LR decay; {config.ensemble} agents merged into one network averaging their Q-values",
            "calibration": "isotonic regression of the initial-state Q-value of each recommended product on "
            "validation hits (one monotone map for all products and positions); the 3 roll-out picks are "
            "returned sorted by that score, so probabilities are non-increasing along the list",
            "episodes": "every (training customer, owned product) pair is an episode, reshuffled each epoch"
            if config.episodes == "all_pairs"
            else "one random owned product per sampled customer",
            "calibration_knots": len(calibrator["x"]),
        },
        "propensity": propensity_block,
        "value": {
            "params": {k: v for k, v in boosting.VALUE_PARAMS.items() if k != "nthread"},
            "rounds": boosting.VALUE_ROUNDS,
            "score": "mid-rank percentile in 1001-point quantile grid of training predictions",
        },
        "thresholds": {
            **thresholds,
            "propensity_decision_rule": "80th percentile of training propensity (top 20 % flagged)",
            "segment_rule": "high if score >= segment_high_min, medium if >= segment_medium_min, else low",
        },
        "metrics": metrics,
        "libraries": libraries,
    }

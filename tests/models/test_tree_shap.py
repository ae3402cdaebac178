"""The TreeSHAP table equals XGBoost's pred_contribs on the shipped boosters, and the engine serves it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st

from models import boosting
from models import data as D
from models.engine import InferenceEngine
from models.registry import Registry
from models.tree_shap import ShapTable, TreeTooLarge
from schemas.features import FEATURE_LOWER, FEATURE_UPPER

OLD_XGBOOST_VERSION = "v20261122-110138"  # propensity as a seed ensemble of boosters


def _xgboost_contributions(booster: xgb.Booster, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(contributions without bias, bias) from XGBoost's exact TreeSHAP."""
    full = booster.predict(xgb.DMatrix(np.ascontiguousarray(x, dtype=np.float32)), pred_contribs=True)
    return full[:, :-1].astype(np.float64), full[:, -1].astype(np.float64)


def _assert_matches_xgboost(table: ShapTable, booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """Equal within float32 rounding, relative to the scale of the contributions; returns XGBoost's bias."""
    expected, bias = _xgboost_contributions(booster, x)
    scale = max(float(np.abs(expected).max()), 1e-3)
    np.testing.assert_allclose(table.contributions(x), expected, rtol=1e-4, atol=1e-5 * scale)
    return bias


@pytest.fixture(scope="module")
def training_rows() -> np.ndarray:
    return D.load_matrix(D.resolve_data_path())


@pytest.fixture(scope="module")
def value_booster() -> xgb.Booster:
    registry = Registry()
    version = registry.active_version()
    return boosting.load(registry.path(version) / registry.manifest(version)["artifacts"]["value"])


@pytest.fixture(scope="module")
def value_table(value_booster: xgb.Booster) -> ShapTable:
    return ShapTable.of(value_booster)


def test_value_table_equals_pred_contribs_on_the_training_set(
    value_table: ShapTable, value_booster: xgb.Booster, training_rows: np.ndarray
) -> None:
    x = training_rows[:, list(D.VALUE_COLUMNS)]
    bias = _assert_matches_xgboost(value_table, value_booster, x)
    got = value_table.contributions(x)
    margin = value_booster.predict(xgb.DMatrix(x.astype(np.float32)), output_margin=True)
    base = float(boosting.TreeTable.of(value_booster).base)  # squared error: the base margin is base_score
    np.testing.assert_allclose(bias, value_table.expected_value + base, rtol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1) + value_table.expected_value + base, margin, atol=1e-5)
    assert got.shape == (len(x), len(D.VALUE_COLUMNS))
    assert (np.abs(got) > 1e-3).sum(axis=1).min() > 3  # real, spread contributions on every row


_VALUE_ROW = st.tuples(*(st.integers(FEATURE_LOWER[c], FEATURE_UPPER[c]) for c in D.VALUE_COLUMNS))


@settings(max_examples=60, deadline=None)
@given(st.lists(_VALUE_ROW, min_size=1, max_size=16))
def test_value_table_equals_pred_contribs_on_random_in_range_rows(
    value_table: ShapTable, value_booster: xgb.Booster, rows: list[tuple[int, ...]]
) -> None:
    _assert_matches_xgboost(value_table, value_booster, np.array(rows, dtype=np.int64))


def test_old_propensity_boosters_table_too(training_rows: np.ndarray) -> None:
    registry = Registry()
    directory = registry.path(OLD_XGBOOST_VERSION)
    names = registry.manifest(OLD_XGBOOST_VERSION)["artifacts"]["propensity"]
    assert isinstance(names, list) and names
    rng = np.random.default_rng(5)
    random_rows = rng.integers(np.array(FEATURE_LOWER), np.array(FEATURE_UPPER) + 1, size=(3000, 86))
    for name in names:
        booster = boosting.load(directory / name)
        table = ShapTable.of(booster)
        for rows in (training_rows, random_rows):
            _assert_matches_xgboost(table, booster, rows[:, list(D.PROPENSITY_COLUMNS)])


def _small_booster(leaves: int, features: int, seed: int) -> tuple[xgb.Booster, np.ndarray]:
    """A booster grown leaf-wise on few integer features: lopsided trees that repeat features."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=(400, features)).astype(np.float32)
    y = x[:, 0] * (x[:, 1] > 2) + np.sin(x[:, -1]) + rng.normal(0, 0.1, len(x))
    params = {"grow_policy": "lossguide", "max_leaves": leaves, "max_depth": 0, "eta": 0.3,
              "min_child_weight": 2, "seed": seed, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=40), x


def test_lopsided_trees_with_repeated_features_match() -> None:
    booster, x = _small_booster(leaves=8, features=3, seed=3)
    table = ShapTable.of(booster)
    grid = np.array([[a, b, c] for a in range(-1, 8) for b in range(-1, 8) for c in (0, 3, 6)],
                    dtype=np.float32)
    _assert_matches_xgboost(table, booster, np.concatenate([x, grid]))


def test_trees_too_large_raise_and_the_engine_falls_back_to_xgboost(training_rows: np.ndarray) -> None:
    deep, _ = _small_booster(leaves=9, features=8, seed=1)
    with pytest.raises(TreeTooLarge):
        ShapTable.of(deep)
    bundle = InferenceEngine.load()._bundle
    assert bundle.value_shap is not None  # the shipped value model is served from its table
    rows = training_rows[:25]
    without_table = dataclasses.replace(bundle, value_shap=None)
    np.testing.assert_allclose(without_table.value_contributions(rows), bundle.value_contributions(rows),
                               rtol=1e-4, atol=1e-5)
    for old, new in zip(without_table.reasons(rows), bundle.reasons(rows), strict=True):
        assert [r["feature"] for r in old["segment_up"]] == [r["feature"] for r in new["segment_up"]]
        assert [r["feature"] for r in old["segment_down"]] == [r["feature"] for r in new["segment_down"]]

"""Additive logistic propensity model: JSON round trip, lookup serving, reason codes, and the CV protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import propensity as P
from models.data import TARGET_INDEX, resolve_data_path


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    """The first 1,500 training rows."""
    from models.data import load_matrix

    return load_matrix(resolve_data_path())[:1500]


@pytest.fixture(scope="module")
def model(data: np.ndarray) -> P.AdditivePropensity:
    """The served model kind fitted on the sample (C by inner CV)."""
    return P.fit_default(data, data[:, TARGET_INDEX], seed=0)


def test_save_load_round_trip_is_identical(
    model: P.AdditivePropensity, data: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "propensity.json"
    P.save(model, path)
    spec = json.loads(path.read_text(encoding="utf-8"))
    assert spec["format"] == P.FORMAT and len(spec["coef"]) == len(spec["mean"])
    loaded = P.load(path)
    np.testing.assert_array_equal(loaded.predict(data), model.predict(data))
    np.testing.assert_array_equal(loaded.contributions(data), model.contributions(data))
    assert loaded.info["C"] in P.C_GRID


def test_lookup_table_equals_design_dot_product(model: P.AdditivePropensity, data: np.ndarray) -> None:
    d, owners = P.design(data, model.terms)
    assert (owners < TARGET_INDEX).all()
    np.testing.assert_allclose(model.logit(data), model.intercept + d @ model.coef, atol=1e-10)
    p = model.predict(data)
    assert ((p > 0) & (p < 1)).all()


def test_a_rows_score_does_not_depend_on_its_batch(model: P.AdditivePropensity, data: np.ndarray) -> None:
    batch = model.predict(data[:500])
    alone = np.concatenate([model.predict(data[i : i + 1]) for i in range(500)])
    assert np.array_equal(batch, alone)  # bit for bit: the API scores one row, the scorer thousands


def test_contributions_sum_to_logit_minus_base(model: P.AdditivePropensity, data: np.ndarray) -> None:
    contrib = P.propensity_contributions(model, data)
    assert contrib.shape == (len(data), TARGET_INDEX)
    np.testing.assert_allclose(contrib.sum(axis=1), model.logit(data) - model.base_logit, atol=1e-10)
    used = {t["column"] for t in model.terms}
    assert not np.any(contrib[:, [c for c in range(TARGET_INDEX) if c not in used]])
    # Measured from the training mean: the average contribution of every feature over the fitted rows is 0.
    np.testing.assert_allclose(contrib.mean(axis=0), 0.0, atol=1e-10)


def test_reason_codes_are_the_extremes(model: P.AdditivePropensity, data: np.ndarray) -> None:
    codes = P.reason_codes(model, data[:50])
    contrib = model.contributions(data[:50])
    np.testing.assert_allclose(codes["up_logit"][:, 0], contrib.max(axis=1))
    np.testing.assert_allclose(codes["down_logit"][:, 0], contrib.min(axis=1))
    assert (np.diff(codes["up_logit"], axis=1) <= 0).all()
    assert (np.diff(codes["down_logit"], axis=1) >= 0).all()
    # A padded slot (-1) means fewer than k features push that way; a named one pushes that way.
    assert ((codes["up"] == -1) == (codes["up_logit"] == 0)).all()
    assert ((codes["down"] == -1) == (codes["down_logit"] == 0)).all()
    named = codes["up"][codes["up"] >= 0]
    assert set(named.tolist()) <= {t["column"] for t in model.terms}


def test_target_is_never_an_input() -> None:
    with pytest.raises(ValueError):
        P.term("CARAVAN", "linear")


def test_legacy_folds_are_stratified_disjoint_and_cover_every_row() -> None:
    y = np.r_[np.ones(37, dtype=np.int64), np.zeros(463, dtype=np.int64)]
    np.random.default_rng(1).shuffle(y)
    folds = P.stratified_folds(y, 5, seed=3)
    joined = np.concatenate(folds)
    assert len(joined) == len(y) and len(np.unique(joined)) == len(y)
    assert {int(y[f].sum()) for f in folds} <= {7, 8}
    assert {len(f) for f in folds} == {100}
    assert not all(
        np.array_equal(a, b) for a, b in zip(folds, P.stratified_folds(y, 5, seed=4), strict=True)
    )

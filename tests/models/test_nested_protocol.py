"""Fold discipline of the nested protocol for every model: no twin group on both sides of an outer split, and
every data-driven choice (terms, value target and rounds, DQN weights, popular products) made on the outer
training rows only."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models import candidates as K
from models import cv, dqn, gate, recommender_baselines, recommender_cv, value_cv
from models import data as D
from models.folds import outer_splits, twin_groups

TINY_DQN = dqn.DQNConfig(rounds=2, episodes_per_round=64, updates_per_round=2, batch_size=32, ensemble=1)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    """600 training rows with their twins (identical 85-value rows) kept together."""
    return D.load_matrix(D.resolve_data_path())[:600]


def vectors(rows: np.ndarray) -> set[bytes]:
    """The 85 input values of each row, as hashable keys (twins share one)."""
    return {r.tobytes() for r in np.ascontiguousarray(rows[:, : D.TARGET_INDEX], dtype=np.int64)}


def test_outer_splits_keep_every_twin_group_on_one_side() -> None:
    data = D.load_matrix(D.resolve_data_path())
    y, groups = data[:, D.TARGET_INDEX], twin_groups(data)
    splits = list(outer_splits(y, groups, 5, 2, seed=0))
    assert [(r, f) for r, f, _, _ in splits] == [(r, f) for r in (0, 1) for f in range(5)]
    for r in (0, 1):
        tests = [test for rr, _, _, test in splits if rr == r]
        assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(len(y)))  # a partition per repeat
    for _, _, train, test in splits:
        assert len(train) + len(test) == len(y)
        assert not set(groups[train]) & set(groups[test])
        assert not vectors(data[train]) & vectors(data[test])


def spy(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, seen: list[np.ndarray]) -> None:
    """Record the rows (first argument) every call of owner.name is given, then run the real function."""
    real = getattr(owner, name)

    def wrapper(rows: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        seen.append(np.asarray(rows).copy())
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def assert_fitted_on_training_rows_only(sample: np.ndarray, seen: list[np.ndarray], per_fold: int) -> None:
    """Every recorded fit of outer fold f saw rows of its training part only, never a test fold's vector."""
    splits = list(outer_splits(sample[:, D.TARGET_INDEX], twin_groups(sample), 3, 1, seed=0))
    assert len(seen) == per_fold * len(splits)
    for i, (_, _, train, test) in enumerate(splits):
        for rows in seen[i * per_fold : (i + 1) * per_fold]:
            assert vectors(rows) <= vectors(sample[train])
            assert not vectors(rows) & vectors(sample[test])


def test_value_procedure_chooses_on_outer_training_rows_only(
    sample: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[np.ndarray] = []
    spy(monkeypatch, value_cv, "inner_spearman", seen)  # the choice of target and rounds
    premium = D.annual_premium(sample, D.band_midpoints())
    rows = value_cv.outer_cv(sample, premium, folds=3, repeats=1, seed=0)
    assert_fitted_on_training_rows_only(sample, seen, per_fold=1)
    summary = value_cv.summarise(rows, 3)
    assert summary["outer_folds"] == 3 and 0.5 < summary["spearman"] <= 1.0
    assert sum(summary["chosen"].values()) == 3 and summary["spearman_spread"] > 0


def test_recommender_is_trained_and_ranked_on_outer_training_rows_only(
    sample: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[np.ndarray] = []
    spy(monkeypatch, dqn, "train_dqn", seen)
    rows = recommender_cv.outer_cv(sample, folds=3, repeats=1, seed=0, config=TINY_DQN)
    assert_fitted_on_training_rows_only(sample, seen, per_fold=1)
    splits = list(outer_splits(sample[:, D.TARGET_INDEX], twin_groups(sample), 3, 1, seed=0))
    for row, (_, _, train, test) in zip(rows, splits, strict=True):
        popular = np.argsort(-D.owned(sample[train]).mean(axis=0))[:3]
        assert row["top3_popular_products"] == popular.tolist()
        assert row["all_pairs.dqn.pairs"] == int(D.owned(sample[test]).sum())  # scored on the test fold
    summary = recommender_cv.summarise(rows, 3)
    assert 0.0 <= summary["one_random.dqn.hr3"]["mean"] <= 1.0 and summary["outer_folds"] == 3


def test_supervised_rankers_are_fitted_on_outer_training_rows_only(
    sample: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[np.ndarray] = []
    spy(monkeypatch, recommender_baselines, "training_pairs", seen)
    rows = recommender_baselines.outer_cv(sample, folds=3, repeats=1, seed=0, models=("logistic",))
    assert_fitted_on_training_rows_only(sample, seen, per_fold=1)
    summary = recommender_cv.summarise(rows, 3)
    ranker, popular = summary["all_pairs.logistic.hr3"]["mean"], summary["all_pairs.popularity.hr3"]["mean"]
    assert ranker > popular  # a fitted ranker, scored like the DQN, beats the popularity baseline


def test_a_leaked_incumbent_is_compared_through_its_procedure_re_choosing_in_the_folds(
    sample: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cv.RENESTED[gate.legacy_procedure({"propensity": {"kind": "additive_logistic"}}) or ""] == (
        "lr_small8_renested"
    )
    seen: list[np.ndarray] = []
    spy(monkeypatch, K, "stepwise_terms", seen)  # the 8 terms, re-chosen per outer training fold
    results = cv.outer_cv(sample, [], ["lr_small8_renested"], folds=3, repeats=1, seed=0)
    assert_fitted_on_training_rows_only(sample, seen, per_fold=1)
    assert len(results["lr_small8_renested"]) == 3


def test_stepwise_terms_find_the_informative_columns() -> None:
    from schemas.features import FEATURE_NAMES

    rng = np.random.default_rng(0)
    x = D.load_matrix(D.resolve_data_path())[:3000]
    power, fire = FEATURE_NAMES.index("MKOOPKLA"), FEATURE_NAMES.index("PBRAND")
    logit = -3.5 + 0.4 * x[:, power] + 1.5 * (x[:, fire] >= 3)
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    names = [t["name"] for t in K.stepwise_terms(x, y, 3)]
    assert names[0] == "PBRAND" and "MKOOPKLA" in names  # main type (a wealth proxy) may come between

"""Nested grouped CV of the propensity procedure: folds, the one-standard-error rule, calibration, the gate,
and the served form of every model family."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models import candidates as K
from models import cv, gate, selection
from models import served_propensity as served
from models.data import TARGET_INDEX, load_matrix, resolve_data_path
from models.folds import grouped_folds, twin_groups


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    """1,500 training rows."""
    return load_matrix(resolve_data_path())[:1500]


@pytest.fixture(scope="module")
def inner(sample: np.ndarray) -> selection.InnerResult:
    """Every candidate configuration scored by the inner grouped CV on the sample."""
    return selection.inner_cv(sample, sample[:, TARGET_INDEX], twin_groups(sample), seed=0)


def test_twins_never_span_two_folds_and_buyers_are_balanced() -> None:
    data = load_matrix(resolve_data_path())
    y, groups = data[:, TARGET_INDEX], twin_groups(data)
    assert len(np.unique(groups)) < len(groups)  # the training set has twins
    folds = grouped_folds(y, groups, 5, seed=0)
    joined = np.concatenate(folds)
    assert len(joined) == len(y) and len(np.unique(joined)) == len(y)
    fold_of = np.empty(len(y), dtype=np.int64)
    for f, rows in enumerate(folds):
        fold_of[rows] = f
    for g in np.unique(groups[np.bincount(groups)[groups] > 1]):
        assert len(np.unique(fold_of[groups == g])) == 1
    buyers = [int(y[f].sum()) for f in folds]
    assert max(buyers) - min(buyers) <= 6 and max(map(len, folds)) - min(map(len, folds)) <= 10
    assert not np.array_equal(folds[0], grouped_folds(y, groups, 5, seed=1)[0])


def test_one_se_rule_takes_the_simplest_configuration_within_one_standard_error() -> None:
    cfgs = K.configs(["nb", "xgb"])
    fold_auc = {c.name: [0.70] * 5 for c in cfgs}
    fold_auc[cfgs[1].name] = [0.73, 0.74, 0.75, 0.76, 0.77]  # mean 0.75, se ~0.0071
    fold_auc[cfgs[-1].name] = [0.76, 0.77, 0.78, 0.79, 0.80]  # best: mean 0.78, se ~0.0071
    inner = selection.InnerResult(cfgs, {}, fold_auc)
    chosen, report = selection.one_se_choice(inner, ["nb", "xgb"])
    assert report["best"] == cfgs[-1].name and chosen == cfgs[-1]  # 0.75 is not within 0.78 - 0.0071
    fold_auc[cfgs[2].name] = [0.772, 0.774, 0.776, 0.778, 0.78]  # mean 0.776: within one SE of the best
    chosen, _ = selection.one_se_choice(selection.InnerResult(cfgs, {}, fold_auc), ["nb", "xgb"])
    assert chosen == cfgs[2]


def test_ece_is_zero_when_calibrated_and_grows_with_miscalibration() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.0, 0.3, 200_000)
    y = (rng.random(len(p)) < p).astype(np.int64)
    assert cv.ece(y, p) < 0.006  # sampling noise of 20,000-row bins
    assert cv.ece(y, np.clip(p * 2, 0, 1)) > 0.1


def test_procedure_is_calibrated_on_inner_out_of_fold_scores(
    inner: selection.InnerResult, sample: np.ndarray
) -> None:
    y = sample[:, TARGET_INDEX]
    proc = selection.choose_and_fit(inner, ["lr_binned"], sample, y, seed=0)
    assert proc.report["chosen"].startswith("lr_binned") and set(proc.report["inner_auc"]) == {
        c.name for c in K.configs(["lr_binned"])
    }
    p = proc.predict(sample)
    assert ((p > 0) & (p < 1)).all()
    assert abs(p.mean() - y.mean()) < 0.02  # Platt keeps the base rate


@pytest.mark.parametrize("family", ["nb", "lr_linear", "xgb", "ensemble"])
def test_served_form_predicts_what_the_procedure_does(
    family: str, inner: selection.InnerResult, sample: np.ndarray, tmp_path: Path
) -> None:
    y = sample[:, TARGET_INDEX]
    proc = selection.choose_and_fit(inner, [family], sample, y, seed=0)
    model = served.from_procedure(proc)
    served.save(model, tmp_path, "propensity.json")
    assert not list(tmp_path.glob("*.pkl"))
    loaded = served.load(tmp_path, "propensity.json")
    np.testing.assert_allclose(loaded.predict(sample), proc.predict(sample), rtol=1e-6, atol=1e-9)
    assert isinstance(loaded, served.BoostedPropensity) == (family in ("xgb", "ensemble"))


def test_engine_serves_a_boosted_propensity_with_reason_codes(
    inner: selection.InnerResult, sample: np.ndarray, tmp_path: Path
) -> None:
    from models.engine import InferenceEngine
    from models.registry import PACKAGE_REGISTRY, Registry

    shipped = Registry(PACKAGE_REGISTRY).active_version()
    shutil.copytree(PACKAGE_REGISTRY / shipped, tmp_path / "boosted")
    proc = selection.choose_and_fit(inner, ["xgb"], sample, sample[:, TARGET_INDEX], seed=0)
    model = served.from_procedure(proc)
    served.save(model, tmp_path / "boosted", "propensity.json")
    Registry(tmp_path).activate("boosted")
    engine = InferenceEngine.load(tmp_path)
    rows = sample[:200]
    np.testing.assert_allclose(engine.score(rows).propensity, model.predict(rows), rtol=1e-6)
    contrib = engine._bundle.propensity_contributions(rows)
    assert contrib.shape == (len(rows), TARGET_INDEX) and np.abs(contrib).sum() > 0
    assert engine.reasons(rows[:1])[0]["propensity_up"]


def _folds(coil: list[float], auc: float = 0.75) -> list[cv.FoldResult]:
    return [{"repeat": 0, "fold": f, "coil": c, "auc": auc} for f, c in enumerate(coil)]


def test_gate_needs_a_gain_larger_than_the_paired_spread() -> None:
    active = _folds([120.0, 110.0, 130.0, 125.0, 115.0])
    assert gate.decide(_folds([128.0, 118.0, 139.0, 132.0, 124.0]), active, "v1", 5)["passed"]
    noisy = gate.decide(_folds([130.0, 100.0, 140.0, 120.0, 116.0]), active, "v1", 5)
    assert not noisy["passed"] and noisy["diff"] == pytest.approx(1.2)
    assert "does not beat v1" in noisy["reason"]
    assert gate.decide(active, None, None, 5)["passed"]
    other = gate.decide(active, None, "v1", 5)
    assert not other["passed"] and "not comparable" in other["reason"]


def test_gate_reads_stored_folds_only_for_the_same_fold_plan() -> None:
    key = gate.protocol_key("abc", 5, 2, 0)
    manifest = {"propensity": {"nested_cv": {"key": key, "folds": _folds([1.0])}}}
    assert gate.active_folds(manifest, key) == _folds([1.0])
    assert gate.active_folds(manifest, gate.protocol_key("abd", 5, 2, 0)) is None
    assert gate.legacy_procedure(manifest) is None
    assert gate.legacy_procedure({"propensity": {"kind": "additive_logistic"}}) == "lr_small8"
    assert gate.legacy_procedure({"artifacts": {"propensity": ["a.ubj"]}}) == "xgb_3seeds"

"""Live quality math against straightforward references (sklearn, pair counts, loops), with hypothesis."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from models import live_quality
from models.evaluate import top_fraction_buyers

# Coarse propensities so ties (the hard case) are common.
propensities = st.lists(st.integers(0, 20).map(lambda v: v / 20), min_size=2, max_size=60)


def _labelled(draw_p: list[float], seed: int) -> tuple[np.ndarray, np.ndarray]:
    p = np.array(draw_p)
    y = (np.random.default_rng(seed).random(len(p)) < p).astype(np.int64)
    return y, p


@settings(max_examples=150, deadline=None)
@given(propensities, st.integers(0, 10_000))
def test_realised_figures_match_references_and_ignore_order(values: list[float], seed: int) -> None:
    y, p = _labelled(values, seed)
    got = live_quality.propensity_quality(y, p)
    if 0 < y.sum() < len(y):
        assert math.isclose(got["auc"], roc_auc_score(y, p), abs_tol=1e-12)
    else:
        assert got["auc"] is None
    bins: list[list[int]] = [[] for _ in range(10)]
    for i, value in enumerate(p):
        bins[min(int(value * 10), 9)].append(i)
    gap = sum(len(b) * abs(p[b].mean() - y[b].mean()) for b in bins if b) / len(p)
    assert math.isclose(got["ece"], gap, abs_tol=1e-12)
    assert [b["count"] for b in got["reliability"]] == [len(b) for b in bins]
    order = np.random.default_rng(seed).permutation(len(p))
    assert live_quality.propensity_quality(y[order], p[order]) == got


@settings(max_examples=150, deadline=None)
@given(propensities, st.integers(0, 10_000))
def test_top20_buyers_share_ties_evenly(values: list[float], seed: int) -> None:
    y, p = _labelled(values, seed)
    k = round(0.2 * len(p))
    # Reference: the mean over every tie-breaking order = the mean over many random ones, exactly for
    # distinct values; with ties, the expectation of a random tie-break in closed form by groups.
    expected = 0.0
    left = k
    for value in sorted(set(p.tolist()), reverse=True):
        group = p == value
        take = min(left, int(group.sum()))
        expected += take * y[group].mean()
        left -= take
    assert math.isclose(live_quality.top_buyers(y, p), expected, abs_tol=1e-9)
    distinct = p + np.arange(len(p)) * 1e-9
    assert math.isclose(live_quality.top_buyers(y, distinct), top_fraction_buyers(y, distinct), abs_tol=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 19).map(lambda v: v / 20), min_size=1, max_size=40))
def test_cbpe_auc_is_the_expected_pair_order(values: list[float]) -> None:
    p = np.array(values)
    num = den = 0.0
    for i in range(len(p)):  # every ordered pair (i positive, j negative), itself included
        for j in range(len(p)):
            weight = p[i] * (1 - p[j])
            den += weight
            num += weight * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0)
    assert math.isclose(live_quality.estimated_auc(p), num / den, abs_tol=1e-12)


def test_cbpe_lands_within_its_stated_error_on_a_calibrated_model() -> None:
    rng = np.random.default_rng(26)
    p = rng.beta(0.6, 6.0, size=4000)  # skewed like caravan propensities (about 8 % buyers)
    y = (rng.random(len(p)) < p).astype(np.int64)  # labels drawn from p: calibrated by construction
    estimate = live_quality.estimated_quality(p)
    realised = live_quality.propensity_quality(y, p)
    assert abs(estimate["auc"] - realised["auc"]) <= estimate["auc_error"]
    assert estimate["auc_error"] < 0.05
    spread = 2 * math.sqrt(float((p * (1 - p)).sum()))  # two standard deviations of the buyer count
    assert abs(estimate["top20_buyers"] - realised["top20_buyers"]) <= spread
    # A miscalibrated model (propensities pushed to 0.5) misleads the estimate, as the caveat says.
    squashed = 0.5 + (p - 0.5) * 0.2
    assert abs(live_quality.estimated_auc(squashed) - realised["auc"]) > estimate["auc_error"]


def test_recommender_hit_rate_overall_and_per_product() -> None:
    hits = np.array([True, False, False, True])
    got = live_quality.recommender_quality(["car", "fire", "car", "life"], hits)
    assert got["hr3"] == 0.5
    assert got["per_product"] == {"car": {"pairs": 2, "hr3": 0.5}, "fire": {"pairs": 1, "hr3": 0.0},
                                  "life": {"pairs": 1, "hr3": 1.0}}

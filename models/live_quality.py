"""Live model quality from joined outcomes: realised AUC, top-20 % buyers, lift, calibration, HR@3, CBPE.

Pure math on arrays (no I/O): store/outcome_join.py supplies them, the API, CLI and alerts read the result.
Every figure depends only on the multiset of its inputs, never on their order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.evaluate import TOP_FRACTION, auc, top_fraction_count

RELIABILITY_BINS = 10
POSITIVE, NEGATIVE, PENDING, SUPERSEDED = 1, 0, -1, -2
"""A prediction's label status (store/outcome_join.py documents the rule)."""
CBPE_CAVEAT = (
    "Estimated from the propensities alone (CBPE): right only as far as the model is calibrated now; "
    "compare propensity.ece and the reliability curve. `auc_error` is twice the sampling standard error "
    "(Hanley-McNeil) and excludes any calibration bias."
)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def top_buyers(y: np.ndarray, p: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Expected label sum of the top `fraction` by p, ties at the cut shared evenly (order-independent)."""
    n = len(p)
    k = top_fraction_count(n, fraction)
    if k == 0:
        return 0.0
    threshold = np.partition(p, n - k)[n - k]  # the k-th highest, in linear time
    above = p > threshold
    at = p == threshold
    taken = k - int(above.sum())
    return float(y[above].sum() + taken * y[at].sum() / at.sum())


def reliability(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict[str, Any]]:
    """Equal-width bins of p in [0, 1]: count, mean predicted and observed rate (None when empty)."""
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=p, minlength=bins)
    observed = np.bincount(index, weights=y.astype(np.float64), minlength=bins)
    return [
        {
            "low": i / bins,
            "high": (i + 1) / bins,
            "count": int(counts[i]),
            "mean_predicted": float(predicted[i] / counts[i]) if counts[i] else None,
            "observed": float(observed[i] / counts[i]) if counts[i] else None,
        }
        for i in range(bins)
    ]


def ece(curve: Sequence[dict[str, Any]]) -> float:
    """Expected calibration error: count-weighted mean |mean predicted - observed| over the bins."""
    total = sum(b["count"] for b in curve)
    if total == 0:
        return float("nan")
    gaps = sum(b["count"] * abs(b["mean_predicted"] - b["observed"]) for b in curve if b["count"])
    return float(gaps / total)


def estimated_auc(p: np.ndarray) -> float:
    """CBPE AUC: ROC curve of expected true/false positives (label i ~ Bernoulli(p_i)), ties one step."""
    positives, negatives = float(p.sum()), float((1.0 - p).sum())
    if len(p) == 0 or positives <= 0.0 or negatives <= 0.0:
        return float("nan")
    descending = np.sort(p, kind="stable")[::-1]  # linear when p is already sorted (estimated_quality)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(descending)) + 1))  # score groups
    tp = np.add.reduceat(descending, starts)
    fp = np.add.reduceat(1.0 - descending, starts)
    fp_before = np.concatenate(([0.0], np.cumsum(fp)[:-1]))
    area = float(np.sum(tp * (fp_before + 0.5 * fp)))  # each positive weight over the negatives above it
    return 1.0 - area / (positives * negatives)


def auc_standard_error(value: float, positives: float, negatives: float) -> float:
    """Hanley-McNeil standard error of an AUC over this many positives and negatives."""
    if math.isnan(value) or positives <= 0 or negatives <= 0:
        return float("nan")
    q1, q2 = value / (2 - value), 2 * value * value / (1 + value)
    variance = (value * (1 - value) + (positives - 1) * (q1 - value * value)
                + (negatives - 1) * (q2 - value * value)) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def propensity_quality(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Realised figures of labelled predictions (y 1 buyer, 0 not)."""
    # Ascending p makes every float sum canonical (tied p are equal; y sums are exact integers), so no
    # figure depends on the order the rows arrived in.
    order = np.argsort(p)
    y, p = y[order], p[order]
    n, buyers = len(p), float(y.sum())
    curve = reliability(y, p)
    found = top_buyers(y, p)
    k = top_fraction_count(n)
    lift = (found / k) / (buyers / n) if n and k and buyers else float("nan")
    return {
        "labelled": n,
        "buyers": int(buyers),
        "auc": _nan_to_none(auc(y, p)) if n else None,
        "top20_buyers": found,
        "top20_share": found / buyers if buyers else None,
        "lift": _nan_to_none(lift),
        "ece": _nan_to_none(ece(curve)),
        "reliability": curve,
    }


def estimated_quality(p: np.ndarray) -> dict[str, Any]:
    """CBPE figures from propensities alone, with their sampling error and caveat."""
    p = np.sort(p)  # canonical order (see propensity_quality)
    value = estimated_auc(p)
    positives = float(p.sum())
    return {
        "predictions": len(p),
        "auc": _nan_to_none(value),
        "auc_error": _nan_to_none(2 * auc_standard_error(value, positives, len(p) - positives)),
        "top20_buyers": top_buyers(p, p),
        "buyers": positives,
        "caveat": CBPE_CAVEAT,
    }


def recommender_quality(products: Sequence[str], hits: np.ndarray) -> dict[str, Any]:
    """HR@3 over attributed (prediction, product bought) pairs, overall and per product."""
    per: dict[str, list[int]] = {}
    for product, hit in zip(products, hits.tolist(), strict=True):
        tally = per.setdefault(product, [0, 0])
        tally[0] += 1
        tally[1] += int(hit)
    pairs = len(products)
    return {
        "pairs": pairs,
        "hits": int(hits.sum()),
        "hr3": float(hits.sum()) / pairs if pairs else None,
        "per_product": {k: {"pairs": v[0], "hr3": v[1] / v[0]} for k, v in sorted(per.items())},
    }


def quality(status: np.ndarray, propensity: np.ndarray, products: Sequence[str], hits: np.ndarray,
            unmatched: int) -> dict[str, Any]:
    """The performance document of one version and window (docs/outcomes.md)."""
    labelled = (status == POSITIVE) | (status == NEGATIVE)
    return {
        "predictions": len(status),
        "labelled": int(labelled.sum()),
        "pending": int((status == PENDING).sum()),
        "superseded": int((status == SUPERSEDED).sum()),
        "unmatched": unmatched,
        "propensity": propensity_quality(
            (status[labelled] == POSITIVE).astype(np.int64), propensity[labelled]),
        "recommender": recommender_quality(products, hits),
        "estimated": estimated_quality(propensity),
    }


def last_labelled(status: np.ndarray, scored: np.ndarray, n: int) -> np.ndarray:
    """Mask of the n most recently scored labelled predictions (ties at the cut all kept)."""
    labelled = (status == POSITIVE) | (status == NEGATIVE)
    if labelled.sum() <= n:
        return labelled
    cut = np.sort(scored[labelled])[::-1][n - 1]
    return labelled & (scored >= cut)


def training_labels(status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of labelled rows, their 0/1 labels) for training: 1 when a caravan was bought within the horizon
    after the prediction (attributed to it, or superseded: a later prediction took the purchase), 0 when the
    horizon closed without one; pending predictions are left out."""
    bought = (status == POSITIVE) | (status == SUPERSEDED)
    mask = bought | (status == NEGATIVE)
    return mask, bought[mask].astype(np.int64)

"""Caravan-propensity candidates and the selection procedure run inside every training set.

The procedure (`select_and_fit`) sees only the rows it is given: an inner grouped k-fold scores every
candidate configuration (features, binning, regularisation, model family), the one-standard-error rule picks
the simplest configuration within one standard error of the best inner AUC, a Platt map is fitted on that
configuration's inner out-of-fold scores, and the configuration is refitted on all the given rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models import propensity as P
from schemas.features import FEATURE_NAMES, FEATURE_RANGES, TARGET_INDEX

FAMILIES = ("nb", "lr_linear", "lr_binned", "xgb", "ensemble")  # simplest first (the 1-SE rule's order)
NB_K = (4, 8, 16)
LR_LINEAR_C = (0.003, 0.01, 0.03, 0.1)
LR_BINNED_C = (0.001, 0.003, 0.01, 0.03)
XGB_DEPTHS, XGB_ROUNDS = (1, 2), (100, 200, 400)
XGB_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eta": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.5,
    "reg_lambda": 10.0,
    "min_child_weight": 1,
    "nthread": 1,
}
MIN_BIN_ROWS = 30  # a step at value v is kept only if this many fitted rows have x >= v (and x < v)
PRODUCT_START = 43  # columns 44-85 are product contributions (P*) and counts (A*); 1-43 are area shares
INNER_FOLDS = 5


@dataclass(frozen=True)
class Config:
    """One candidate: a family and its setting; `rank` orders candidates from simplest to most complex."""

    family: str
    value: Any
    rank: int

    @property
    def name(self) -> str:
        """Readable name, e.g. lr_binned(C=0.01)."""
        label = {"nb": "k", "lr_linear": "C", "lr_binned": "C", "xgb": "depth,rounds"}.get(self.family)
        return self.family if label is None else f"{self.family}({label}={self.value})"


def configs(families: Sequence[str] = FAMILIES) -> list[Config]:
    """Every configuration of the given families, simplest first."""
    values: dict[str, list[Any]] = {
        "nb": list(NB_K),
        "lr_linear": list(LR_LINEAR_C),
        "lr_binned": list(LR_BINNED_C),
        "xgb": [(d, r) for d in XGB_DEPTHS for r in XGB_ROUNDS],
        "ensemble": [None],
    }
    out = [(f, v) for f in FAMILIES if f in families for v in values[f]]
    return [Config(f, v, i) for i, (f, v) in enumerate(out)]


def nb_columns(x: np.ndarray, y: np.ndarray, k: int) -> list[str]:
    """The k columns with the largest AIC-penalised likelihood-ratio statistic (2n·MI − 2·(levels − 1))."""
    pos = np.asarray(y) > 0
    scores = []
    for col in range(TARGET_INDEX):
        low, high = FEATURE_RANGES[col]
        counts = np.stack(
            [
                np.bincount(x[pos, col] - low, minlength=high - low + 1),
                np.bincount(x[~pos, col] - low, minlength=high - low + 1),
            ],
            axis=1,
        ).astype(float)
        counts = counts[counts.sum(axis=1) > 0]
        expected = counts.sum(axis=1, keepdims=True) * counts.sum(axis=0, keepdims=True) / counts.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            g = 2.0 * np.nansum(np.where(counts > 0, counts * np.log(counts / expected), 0.0))
        scores.append(g - 2.0 * (len(counts) - 1))
    return [FEATURE_NAMES[c] for c in np.argsort(scores, kind="stable")[::-1][:k]]


def linear_terms() -> list[P.Term]:
    """All 85 inputs as value / documented max; the nominal customer main type one-hot, subtype left out."""
    terms = [P.term(n, "linear") for n in FEATURE_NAMES[:TARGET_INDEX] if n not in ("MOSTYPE", "MOSHOOFD")]
    return [*terms, P.term("MOSHOOFD", "onehot", list(range(1, 11)))]


def binned_terms(x: np.ndarray) -> list[P.Term]:
    """Area shares linear (main type one-hot); each product column as steps at every well-populated value."""
    terms: list[P.Term] = []
    for col, name in enumerate(FEATURE_NAMES[:TARGET_INDEX]):
        if name == "MOSTYPE":
            continue
        if name == "MOSHOOFD":
            terms.append(P.term(name, "onehot", list(range(1, 11))))
        elif col < PRODUCT_START:
            terms.append(P.term(name, "linear"))
        else:
            v = x[:, col]
            edges = [
                e
                for e in range(1, FEATURE_RANGES[col][1] + 1)
                if min((v >= e).sum(), (v < e).sum()) >= MIN_BIN_ROWS
            ]
            if edges:
                terms.append(P.term(name, "steps", edges))
    return terms


@dataclass
class Fitted:
    """A fitted configuration: raw score (logit, margin or mean rank) and what serving needs."""

    config: Config
    additive: P.AdditivePropensity | None = None
    booster: Any = None
    rounds: int = 0
    members: list[Fitted] = field(default_factory=list)
    grids: list[np.ndarray] = field(default_factory=list)  # sorted training scores of each ensemble member

    def score(self, x: np.ndarray) -> np.ndarray:
        """Raw score per row; higher means more likely to buy."""
        if self.additive is not None:
            return self.additive.logit(x)
        if self.booster is not None:
            return xgb_margin(self.booster, x, self.rounds)
        return np.mean([cdf(g, m.score(x)) for g, m in zip(self.grids, self.members, strict=True)], axis=0)


def rank_grid(scores: np.ndarray, points: int = 1001) -> np.ndarray:
    """Quantiles of training scores at evenly spaced levels (what an ensemble ranks new scores against)."""
    return np.quantile(np.asarray(scores, dtype=np.float64), np.linspace(0.0, 1.0, points))


def cdf(grid: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Mid-rank position of each score in a sorted grid of training scores, in (0, 1)."""
    low, high = np.searchsorted(grid, s, "left"), np.searchsorted(grid, s, "right")
    return np.asarray((low + high + 1) / (2.0 * len(grid) + 1))


def xgb_margin(booster: Any, x: np.ndarray, rounds: int) -> np.ndarray:
    """Margin of the first `rounds` trees on columns 1-85."""
    features = np.ascontiguousarray(np.asarray(x)[:, :TARGET_INDEX], dtype=np.float32)
    out = booster.inplace_predict(features, iteration_range=(0, rounds), predict_type="margin")
    return np.asarray(out, dtype=np.float64)


def fit_xgb(x: np.ndarray, y: np.ndarray, depth: int, rounds: int, seed: int) -> Any:
    """One booster on columns 1-85."""
    import xgboost as xgb

    matrix = xgb.DMatrix(np.asarray(x)[:, :TARGET_INDEX].astype(np.float32), label=y)
    return xgb.train({**XGB_PARAMS, "max_depth": depth, "seed": seed}, matrix, num_boost_round=rounds)


def fit_family(family: str, values: Sequence[Any], x: np.ndarray, y: np.ndarray, seed: int) -> list[Fitted]:
    """Fit every setting of one family on (x, y); a booster per depth serves all its round counts."""
    cfgs = {c.value: c for c in configs([family])}
    if family == "nb":
        return [Fitted(cfgs[k], P.fit_naive_bayes(x, y, nb_columns(x, y, k))) for k in values]
    if family in ("lr_linear", "lr_binned"):
        terms = linear_terms() if family == "lr_linear" else binned_terms(x)
        return [Fitted(cfgs[c], P.fit_logistic(x, y, terms, (c,), seed)) for c in values]
    if family == "xgb":
        out, boosters = [], {}
        for depth, rounds in values:
            if depth not in boosters:
                boosters[depth] = fit_xgb(x, y, depth, max(r for d, r in values if d == depth), seed)
            out.append(Fitted(cfgs[(depth, rounds)], booster=boosters[depth], rounds=rounds))
        return out
    raise ValueError(f"unknown family {family}")


def blend(members: list[Fitted], x: np.ndarray) -> Fitted:
    """Rank-averaged ensemble of fitted members; each member's ranks against its scores on x."""
    grids = [rank_grid(m.score(x)) for m in members]
    return Fitted(configs(["ensemble"])[0], members=members, grids=grids)


PINV_RCOND = 1e-10
"""Eigenvalues below this share of the largest count as zero in the stepwise score test."""


def stepwise_terms(x: np.ndarray, y: np.ndarray, k: int = 8) -> list[P.Term]:
    """k terms chosen by forward stepwise logistic regression on the rows given (binned_terms' pool).

    Each step adds the term with the largest AIC-penalised score statistic (chi-square - 2 df) given the
    terms so far, the classical stepwise rule. It is the reproducible stand-in for how the pre-protocol
    8-term model got its terms (by looking at the data), so that choice can be re-made inside outer folds.
    """
    from sklearn.linear_model import LogisticRegression

    pool = binned_terms(x)
    blocks = [P.design(x, [t])[0] for t in pool]
    target = (np.asarray(y) > 0).astype(np.float64)
    chosen: list[int] = []
    for _ in range(min(k, len(pool))):
        z = np.hstack([np.ones((len(x), 1)), *(blocks[j] for j in chosen)])
        p = np.full(len(x), target.mean())
        if chosen:
            p = LogisticRegression(C=1e4, max_iter=1000).fit(z[:, 1:], target).predict_proba(z[:, 1:])[:, 1]
        w = p * (1 - p)
        # Symmetric and singular by design (a one-hot block's columns sum to the intercept): on some CPUs
        # the SVD's rounding left a null direction above pinv's default cut-off, and its inverse scored a
        # term at 1e8-1e10 against ~300. A relative cut-off on the eigenvalues drops it everywhere.
        zwz_inv = np.linalg.pinv((z * w[:, None]).T @ z, rcond=PINV_RCOND, hermitian=True)
        best: tuple[float, int] | None = None
        for i in (i for i in range(len(pool)) if i not in chosen):
            c = blocks[i]
            u = c.T @ (target - p)
            cwz = (c * w[:, None]).T @ z
            info = (c * w[:, None]).T @ c - cwz @ zwz_inv @ cwz.T
            stat = float(u @ np.linalg.pinv(info, rcond=PINV_RCOND, hermitian=True) @ u) - 2.0 * c.shape[1]
            if best is None or stat > best[0]:
                best = (stat, i)
        assert best is not None
        chosen.append(best[1])
    return [pool[i] for i in chosen]

"""The propensity selection procedure: inner grouped CV, the one-standard-error rule, Platt calibration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models import candidates as K
from models.evaluate import auc
from models.folds import grouped_folds

LR_FAMILIES = ("lr_linear", "lr_binned")
FIT_FAMILIES = ("nb", "lr_linear", "lr_binned", "xgb")
PLATT_EPS = 1e-6


@dataclass
class InnerResult:
    """Every configuration's inner out-of-fold scores and per-fold AUC on the rows it was given."""

    configs: list[K.Config]
    oof: dict[str, np.ndarray]  # config name -> out-of-fold raw score per row
    fold_auc: dict[str, list[float]]

    def mean(self, name: str) -> float:
        """Mean inner-fold AUC."""
        return float(np.mean(self.fold_auc[name]))

    def best_of(self, families: Sequence[str]) -> K.Config:
        """Highest mean inner AUC among the configurations of the families."""
        pool = [c for c in self.configs if c.family in families]
        return max(pool, key=lambda c: (self.mean(c.name), -c.rank))


def inner_cv(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int, folds: int = K.INNER_FOLDS
) -> InnerResult:
    """Score every configuration by grouped k-fold CV on (x, y); the ensemble from the best LR and XGBoost."""
    cfgs = K.configs()
    oof = {c.name: np.zeros(len(y)) for c in cfgs}
    fold_auc: dict[str, list[float]] = {c.name: [] for c in cfgs}
    train_scores: dict[str, list[np.ndarray]] = {c.name: [] for c in cfgs}
    tests = grouped_folds(y, groups, folds, seed + 7919)
    for f, test in enumerate(tests):
        train = np.setdiff1d(np.arange(len(y)), test)
        for family in FIT_FAMILIES:
            values = [c.value for c in cfgs if c.family == family]
            for fitted in K.fit_family(family, values, x[train], y[train], seed + f):
                s = fitted.score(x[test])
                oof[fitted.config.name][test] = s
                fold_auc[fitted.config.name].append(auc(y[test], s))
                if family != "nb":
                    train_scores[fitted.config.name].append(K.rank_grid(fitted.score(x[train])))
    result = InnerResult(cfgs, oof, fold_auc)
    members = [result.best_of(LR_FAMILIES), result.best_of(("xgb",))]
    ens = K.configs(["ensemble"])[0].name
    for f, test in enumerate(tests):
        s = np.mean([K.cdf(train_scores[m.name][f], oof[m.name][test]) for m in members], axis=0)
        oof[ens][test] = s
        fold_auc[ens].append(auc(y[test], s))
    return result


def one_standard_error(
    simplest_first: Sequence[str], fold_scores: Mapping[str, Sequence[float]]
) -> tuple[str, str, float]:
    """The one-standard-error rule (higher is better): (chosen, best, se).

    Chosen is the first (simplest) name whose mean fold score is within one standard error of the best mean,
    the standard error being that of the best name's fold scores. Every nested procedure chooses by it.
    """
    means = {n: float(np.mean(fold_scores[n])) for n in simplest_first}
    best = max(simplest_first, key=lambda n: means[n])  # first of equal means: the simpler
    folds = np.asarray(fold_scores[best])
    se = float(folds.std(ddof=1) / np.sqrt(len(folds)))
    chosen = next(n for n in simplest_first if means[n] >= means[best] - se)
    return chosen, best, se


def one_se_choice(inner: InnerResult, families: Sequence[str]) -> tuple[K.Config, dict[str, Any]]:
    """The simplest configuration whose mean inner AUC is within one standard error of the best one's."""
    pool = sorted((c for c in inner.configs if c.family in families), key=lambda c: c.rank)
    name, best_name, se = one_standard_error([c.name for c in pool], inner.fold_auc)
    chosen, best = (next(c for c in pool if c.name == n) for n in (name, best_name))
    return chosen, {
        "best": best.name,
        "best_auc": round(inner.mean(best.name), 5),
        "se": round(se, 5),
        "chosen": chosen.name,
        "chosen_auc": round(inner.mean(chosen.name), 5),
        "inner_auc": {c.name: round(inner.mean(c.name), 5) for c in pool},
    }


def platt_input(config: K.Config, score: np.ndarray) -> np.ndarray:
    """The 1-D input of the Platt map: logit/margin as is, a mean rank in (0, 1) through the logit."""
    if config.family != "ensemble":
        return np.asarray(score, dtype=np.float64)
    s = np.clip(score, PLATT_EPS, 1 - PLATT_EPS)
    return np.asarray(np.log(s / (1 - s)))


def fit_platt(config: K.Config, score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of P = sigmoid(a * input + b), by maximum likelihood on out-of-fold scores."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6, max_iter=1000, tol=1e-8)
    model.fit(platt_input(config, score)[:, None], y)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


@dataclass
class Procedure:
    """The outcome of the procedure on one training set: the refitted choice and its calibration."""

    fitted: K.Fitted
    platt: tuple[float, float]
    report: dict[str, Any]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated P(caravan) per row."""
        a, b = self.platt
        z = a * platt_input(self.fitted.config, self.fitted.score(x)) + b
        return np.asarray(1.0 / (1.0 + np.exp(-z)))


def refit(
    config: K.Config,
    inner: InnerResult,
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    cache: dict[str, K.Fitted] | None = None,
) -> K.Fitted:
    """The configuration fitted on all of (x, y) (an ensemble refits its two members); fits are cached."""
    cache = {} if cache is None else cache
    if config.name not in cache:
        if config.family == "ensemble":
            members = [refit(inner.best_of(f), inner, x, y, seed, cache) for f in (LR_FAMILIES, ("xgb",))]
            cache[config.name] = K.blend(members, x)
        else:
            cache[config.name] = K.fit_family(config.family, [config.value], x, y, seed)[0]
    return cache[config.name]


def choose_and_fit(
    inner: InnerResult,
    families: Sequence[str],
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    cache: dict[str, K.Fitted] | None = None,
) -> Procedure:
    """1-SE choice among the families, Platt map on its inner out-of-fold scores, refit on all rows."""
    config, report = one_se_choice(inner, families)
    platt = fit_platt(config, inner.oof[config.name], y)
    report["platt"] = [round(platt[0], 6), round(platt[1], 6)]
    return Procedure(refit(config, inner, x, y, seed, cache), platt, report)


def select_and_fit(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int, families: Sequence[str] = K.FAMILIES
) -> Procedure:
    """The whole procedure on one training set (what `train` ships and what the outer CV evaluates)."""
    return choose_and_fit(inner_cv(x, y, groups, seed), families, x, y, seed)

"""The value model through the nested protocol: target and rounds chosen by an inner grouped CV (1-SE rule),
estimated on the same grouped outer folds as the propensity model (Spearman of the served 0-100 score)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models import boosting
from models.evaluate import spearman
from models.folds import grouped_folds, outer_splits, twin_groups
from models.selection import one_standard_error
from schemas.features import TARGET_INDEX

ROUNDS = (200, 400, boosting.VALUE_ROUNDS)  # fewer rounds first: the direction the 1-SE rule moves
INNER_FOLDS = 5
Trees = dict[str, dict[str, Any]]
SERVED_TREES: Trees = {"": {}}  # the procedure's one tree setting: boosting.VALUE_PARAMS
GRIDS: dict[str, tuple[tuple[str, ...], Trees, tuple[int, ...]]] = {  # targets, tree settings, rounds
    "served": (boosting.VALUE_TARGETS, SERVED_TREES, ROUNDS),
    # measured, not adopted (docs/models.md, "a wider grid"): it does not raise the nested Spearman
    "wide": (
        ("rank",),
        {f"d{d}mcw{m}": {"max_depth": d, "min_child_weight": m} for d in (2, 3, 4, 5) for m in (5, 1)},
        (200, 400, 600, 1000),
    ),
}


@dataclass(frozen=True)
class ValueProcedure:
    """The value procedure's outcome on one training set: the refitted booster, its score grid, the choice."""

    booster: Any
    grid: np.ndarray
    report: dict[str, Any]

    def score(self, features: np.ndarray) -> np.ndarray:
        """0-100 percentile score, as served."""
        return boosting.percentile_score(boosting.predict_value(self.booster, features), self.grid)


def config_name(target: str, rounds: int, tree: str = "") -> str:
    """e.g. rank/600, or rank/600/d4mcw1 for a tree setting other than the served one."""
    return f"{target}/{rounds}" + (f"/{tree}" if tree else "")


def simplest_first(grid: str = "served") -> list[str]:
    """Every configuration, fewest leaves (rounds x 2^depth) first, then the larger min_child_weight, then the
    shallower trees, then the served rank target before log1p."""
    targets, trees, rounds = GRIDS[grid]

    def setting(tree: str, key: str) -> int:
        return int(trees[tree].get(key, boosting.VALUE_PARAMS[key]))

    configs = [(r, tree, t) for r in rounds for tree in trees for t in targets]
    configs.sort(
        key=lambda c: (
            c[0] * 2 ** setting(c[1], "max_depth"),
            -setting(c[1], "min_child_weight"),
            setting(c[1], "max_depth"),
        )
    )
    return [config_name(t, r, tree) for r, tree, t in configs]


def inner_spearman(
    x: np.ndarray, premium: np.ndarray, groups: np.ndarray, seed: int, grid: str = "served"
) -> dict[str, list[float]]:
    """Per configuration, the Spearman of prediction and premium on each inner grouped fold of the rows."""
    targets, trees, rounds = GRIDS[grid]
    scores: dict[str, list[float]] = {name: [] for name in simplest_first(grid)}
    for f, test in enumerate(grouped_folds(x[:, TARGET_INDEX], groups, INNER_FOLDS, seed + 7919)):
        train = np.setdiff1d(np.arange(len(x)), test)
        features = np.ascontiguousarray(x[test][:, list(boosting.VALUE_COLUMNS)], dtype=np.float32)
        for tree, params in trees.items():
            for target in targets:
                booster = boosting.fit_value(
                    x[train], premium[train], seed + f, max(rounds), target, trees=params
                )
                for r in rounds:
                    prediction = booster.inplace_predict(features, iteration_range=(0, r))
                    scores[config_name(target, r, tree)].append(
                        spearman(np.asarray(prediction), premium[test])
                    )
    return scores


def select_and_fit(
    x: np.ndarray,
    premium: np.ndarray,
    groups: np.ndarray,
    seed: int,
    grid: str = "served",
    rule: str = "one_se",
) -> ValueProcedure:
    """The whole value procedure on the rows given: inner CV, choice (1-SE rule, or the best mean), refit,
    score grid."""
    scores = inner_spearman(x, premium, groups, seed, grid)
    chosen, best, se = one_standard_error(simplest_first(grid), scores)
    if rule == "best":
        chosen = best
    target, rounds, *tree = chosen.split("/")
    params = GRIDS[grid][1][tree[0] if tree else ""]
    booster = boosting.fit_value(x, premium, seed, int(rounds), target, trees=params)
    grid_points = boosting.quantile_grid(boosting.predict_value(booster, x))
    report = {
        "chosen": chosen,
        "best": best,
        "se": round(se, 5),
        "inner_spearman": {n: round(float(np.mean(v)), 5) for n, v in scores.items()},
        "rule": "one-standard-error rule on inner grouped 5-fold Spearman, toward fewer rounds x 2^depth"
        if rule == "one_se"
        else "best mean inner grouped 5-fold Spearman",
    }
    return ValueProcedure(booster, grid_points, report)


def outer_cv(
    matrix: np.ndarray,
    premium: np.ndarray,
    folds: int,
    repeats: int,
    seed: int,
    progress: Callable[[str], None] | None = None,
    grid: str = "served",
    rule: str = "one_se",
) -> list[dict[str, Any]]:
    """Outer-fold Spearman of the served score against the premium, on the propensity model's outer folds."""
    groups = twin_groups(matrix)
    out: list[dict[str, Any]] = []
    for repeat, f, train, test in outer_splits(matrix[:, TARGET_INDEX], groups, folds, repeats, seed):
        proc = select_and_fit(matrix[train], premium[train], groups[train], 1000 * repeat + f, grid, rule)
        rho = spearman(proc.score(matrix[test]), premium[test])
        out.append({"repeat": repeat, "fold": f, "spearman": rho, "chosen": proc.report["chosen"]})
        if progress:
            progress(f"value outer fold {len(out)}/{folds * repeats}: Spearman {rho:.4f}")
    return out


def summarise(rows: Sequence[dict[str, Any]], folds: int) -> dict[str, Any]:
    """Mean outer Spearman with its Nadeau-Bengio spread, fold range, and the choices made."""
    from models.cv import spread

    rho = np.array([r["spearman"] for r in rows])
    chosen: dict[str, int] = {}
    for r in rows:
        chosen[r["chosen"]] = chosen.get(r["chosen"], 0) + 1
    return {
        "spearman": round(float(rho.mean()), 4),
        "spearman_spread": round(spread(rho, folds, len({r["repeat"] for r in rows})), 4),
        "spearman_min": round(float(rho.min()), 4),
        "spearman_max": round(float(rho.max()), 4),
        "outer_folds": len(rows),
        "chosen": chosen,
    }

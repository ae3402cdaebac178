"""Cross-validation folds grouped by identical feature vector and stratified on the target."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from schemas.features import TARGET_INDEX


def twin_groups(features: np.ndarray) -> np.ndarray:
    """Group id per row: rows with the same 85 input values (CARAVAN excluded) share one id."""
    _, groups = np.unique(np.asarray(features)[:, :TARGET_INDEX], axis=0, return_inverse=True)
    return np.asarray(groups, dtype=np.int64).ravel()


def grouped_folds(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Disjoint sorted test-index arrays covering all rows; a group never spans two folds.

    Groups holding a buyer are dealt first, each to the fold with the fewest buyers so far, then the rest to
    the fold with the fewest rows; ties broken by a seeded shuffle, larger groups placed first.
    """
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(groups, return_inverse=True)
    size = np.bincount(inverse, minlength=len(ids))
    buyers = np.bincount(inverse, weights=(np.asarray(y) > 0).astype(np.float64), minlength=len(ids))
    order = rng.permutation(len(ids))
    order = order[
        np.lexsort((-size[order], -(buyers[order] > 0).astype(np.int64)))
    ]  # buyers' groups, then by size
    fold_rows, fold_buyers = np.zeros(folds), np.zeros(folds)
    fold_of = np.empty(len(ids), dtype=np.int64)
    tie = rng.random(folds)  # seeded tie-break between equally filled folds
    for g in order:
        load = fold_buyers if buyers[g] > 0 else fold_rows
        f = int(np.lexsort((tie, fold_rows, load))[0])
        fold_of[g] = f
        fold_rows[f] += size[g]
        fold_buyers[f] += buyers[g]
    row_fold = fold_of[inverse.ravel()]
    return [np.flatnonzero(row_fold == f) for f in range(folds)]


def outer_splits(
    y: np.ndarray, groups: np.ndarray, folds: int, repeats: int, seed: int
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """The nested protocol's outer loop: (repeat, fold, training rows, test rows); repeat r uses seed + r.

    Every model (propensity, recommender, value) is estimated on these splits, so their folds are the same.
    """
    for r in range(repeats):
        for f, test in enumerate(grouped_folds(y, groups, folds, seed + r)):
            yield seed + r, f, np.setdiff1d(np.arange(len(y)), test), test

"""Repeated stratified k-fold CV of caravan-propensity candidates (AUC, buyers in the top 20 %)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from models.evaluate import COIL_EVAL_BUYERS, auc, top_fraction_buyers

# Figures of the run that chose the served model (docs/models.md, "Propensity: repeated cross-validation").
CV_REPORT: dict[str, Any] = {
    "command": "python -m models.cv --data train.csv --repeats 20 --folds 5 --seed 0 (run as --seed 0 and "
    "--seed 10 chunks of 10 repeats, combined with --merge)",
    "protocol": "repeated stratified 5-fold CV on train.csv, 20 repeats; C by inner 5-fold CV on the training"
    " folds only; feature sets fixed a priori; top 20 % of each held-out fold, scaled to CoIL as found/fold "
    "buyers x 238; mean +- std over repeats of the 5-fold means; diff = paired per-repeat difference",
    "baseline": {
        "name": "xgb_baseline_3seeds (depth 2, mcw 1, 327 rounds, 3 seeds)",
        "auc": [0.7656, 0.0036],
        "top20_coil": [128.3, 2.4],
    },
    "served": {"name": "lr_small8", "auc": [0.7702, 0.0021], "top20_coil": [135.1, 2.4]},
    "served_minus_baseline_top20_coil": [6.9, 3.2],
    "single_fold_std_top20_coil": 13.0,
}

Predictor = Callable[[np.ndarray], np.ndarray]
FitFn = Callable[[np.ndarray, np.ndarray, int], Predictor]  # (x_train, y_train, seed) -> predict(x)


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Disjoint sorted test-index arrays covering all rows; each class dealt round-robin after a shuffle."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(folds)]
    offset = 0
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        slot = (np.arange(len(rows)) + offset) % folds
        for f in range(folds):
            parts[f].append(rows[slot == f])
        offset += len(rows)
    return [np.sort(np.concatenate(p)) for p in parts]


def inner_best(
    x: np.ndarray,
    y: np.ndarray,
    grid: Sequence[Any],
    fit: Callable[[np.ndarray, np.ndarray, Any], Predictor],
    seed: int,
    folds: int = 5,
) -> Any:
    """Grid value with the best mean AUC over an inner stratified k-fold of (x, y) only; the value if one."""
    if len(grid) == 1:
        return grid[0]
    test_sets = stratified_folds(y, folds, seed + 104_729)
    scores = []
    for value in grid:
        aucs = []
        for test in test_sets:
            train = np.setdiff1d(np.arange(len(y)), test)
            aucs.append(auc(y[test], fit(x[train], y[train], value)(x[test])))
        scores.append(float(np.mean(aucs)))
    return grid[int(np.argmax(scores))]


def fold_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, buyers in the fold's top 20 %, the fold's buyers, and the found share scaled to CoIL's 238."""
    found, buyers = top_fraction_buyers(y, p), int((y > 0).sum())
    return {"auc": auc(y, p), "top20": found, "buyers": buyers, "coil": found / buyers * COIL_EVAL_BUYERS}


def run_cv(
    x: np.ndarray,
    y: np.ndarray,
    candidates: Mapping[str, FitFn],
    folds: int = 5,
    repeats: int = 10,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[list[dict[str, float]]]]:
    """Scores per candidate, per repeat, per fold; every candidate sees the same folds (paired comparison).

    Repeat r uses folds and fit seeds from seed + r only, so --seed 0 --repeats 10 plus --seed 10 --repeats 10
    equals --seed 0 --repeats 20.
    """
    out: dict[str, list[list[dict[str, float]]]] = {name: [] for name in candidates}
    for r in range(repeats):
        for name in candidates:
            out[name].append([])
        for f, test in enumerate(stratified_folds(y, folds, seed + r)):
            train = np.setdiff1d(np.arange(len(y)), test)
            for name, fit in candidates.items():
                started = time.perf_counter()
                predict = fit(x[train], y[train], 1000 * (seed + r) + f)  # chunks of repeats combine exactly
                out[name][r].append(
                    {**fold_scores(y[test], predict(x[test])), "seconds": time.perf_counter() - started}
                )
        if progress:
            progress(f"repeat {r + 1}/{repeats} done")
    return out


def summarise(
    results: Mapping[str, list[list[dict[str, float]]]], baseline: str
) -> dict[str, dict[str, float]]:
    """Per candidate: mean/std over repeats of fold-mean AUC and of the fold-mean CoIL-scaled top-20 % buyers.

    Also the std of single folds (what one ~1,165-customer test set scatters by) and the paired difference to
    the baseline over repeats (mean, std).
    """

    def per_repeat(name: str, key: str) -> np.ndarray:
        return np.array([np.mean([f[key] for f in rep]) for rep in results[name]])

    base = per_repeat(baseline, "coil")
    table: dict[str, dict[str, float]] = {}
    for name, reps in results.items():
        a, c = per_repeat(name, "auc"), per_repeat(name, "coil")
        found = np.array([sum(f["top20"] for f in rep) for rep in reps])
        single = np.array([f["coil"] for rep in reps for f in rep])
        diff = c - base
        table[name] = {
            "auc_mean": float(a.mean()),
            "auc_std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "top20_found_mean": float(found.mean()),
            "coil_mean": float(c.mean()),
            "coil_std": float(c.std(ddof=1)) if len(c) > 1 else 0.0,
            "coil_fold_std": float(single.std(ddof=1)) if len(single) > 1 else 0.0,
            "diff_mean": float(diff.mean()),
            "diff_std": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
            "fit_seconds": float(np.mean([f["seconds"] for rep in reps for f in rep])),
            "repeats": len(reps),
        }
    return table


def markdown(table: Mapping[str, Mapping[str, float]], baseline: str) -> str:
    """The summary as a markdown table."""
    lines = [
        "| candidate | AUC mean ± std | top-20 % buyers found (of all) | scaled to CoIL 238: mean ± std "
        "(single-fold std) | vs baseline: diff ± std | fit s/fold |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in table.items():
        diff = "—" if name == baseline else f"{s['diff_mean']:+.1f} ± {s['diff_std']:.1f}"
        lines.append(
            f"| {name} | {s['auc_mean']:.4f} ± {s['auc_std']:.4f} | {s['top20_found_mean']:.1f} | "
            f"{s['coil_mean']:.1f} ± {s['coil_std']:.1f} ({s['coil_fold_std']:.1f}) | {diff} | "
            f"{s['fit_seconds']:.2f} |"
        )
    return "\n".join(lines)


def _xgb(seeds: int, nested: bool = False) -> FitFn:
    """Baseline XGBoost: the registry's parameters (depth 2, mcw 1, 327 rounds) or the full nested grid."""
    from models import boosting

    def fit(x: np.ndarray, y: np.ndarray, seed: int) -> Predictor:
        if nested:
            choice = boosting.select_propensity(x, y, seed)
        else:
            params = {**boosting.PROPENSITY_BASE, "max_depth": 2, "min_child_weight": 1, "nthread": 1}
            choice = boosting.PropensityChoice(params=params, rounds=327, cv_auc=float("nan"), grid=[])
        boosters = boosting.fit_propensity(x, y, choice, [seed + i for i in range(seeds)])
        return lambda z: boosting.predict_propensity(boosters, z)

    return fit


def _logistic(terms: Sequence[dict[str, Any]], c_grid: Sequence[float] | None = None) -> FitFn:
    """L2 logistic regression on the given terms, C by inner CV on the training folds only."""
    from models import propensity as P

    grid = tuple(c_grid) if c_grid is not None else P.C_GRID
    return lambda x, y, seed: P.fit_logistic(x, y, terms, grid, seed).predict


def _naive_bayes(columns: Sequence[str]) -> FitFn:
    """Categorical naive Bayes (Laplace 1) on a priori chosen columns."""
    from models import propensity as P

    return lambda x, y, seed: P.fit_naive_bayes(x, y, columns).predict


def _rank_blend(a: FitFn, b: FitFn) -> FitFn:
    """Sum of the two models' ranks."""
    from scipy.stats import rankdata

    def fit(x: np.ndarray, y: np.ndarray, seed: int) -> Predictor:
        pa, pb = a(x, y, seed), b(x, y, seed)
        return lambda z: np.asarray(rankdata(pa(z)) + rankdata(pb(z)), dtype=np.float64)

    return fit


def candidates() -> dict[str, FitFn]:
    """Every compared candidate by name; the first is the baseline."""
    from models import propensity as P
    from schemas.features import FEATURE_NAMES, TARGET_INDEX

    t = P.term
    all_linear = [t(n, "linear") for n in FEATURE_NAMES[:TARGET_INDEX] if n not in ("MOSTYPE", "MOSHOOFD")]
    all_linear.append(t("MOSHOOFD", "onehot", list(range(1, 11))))
    selected17 = [
        *P.DEFAULT_TERMS,
        t("MOPLLAAG", "linear"),
        t("MINKGEM", "linear"),
        t("MHKOOP", "linear"),
        t("MRELGE", "linear"),
        t("MAUT1", "linear"),
        t("PBROM", "steps", [1]),
        t("PBYSTAND", "steps", [1]),
        t("MINKM30", "linear"),
        t("MOSHOOFD", "onehot", list(range(1, 11))),
    ]
    nb_columns = ["PPERSAUT", "APERSAUT", "MKOOPKLA", "PWAPART", "PBRAND", "MOPLHOOG", "ALEVEN", "MOSHOOFD"]
    return {
        "xgb_baseline_3seeds": _xgb(3),
        "xgb_1seed": _xgb(1),
        "lr_selected17": _logistic(selected17),
        "lr_selected17_C0.01_fixed": _logistic(selected17, [0.01]),
        "lr_selected17+MOSTYPE_onehot": _logistic([*selected17, t("MOSTYPE", "onehot", list(range(1, 42)))]),
        "lr_small8 (served)": _logistic(P.DEFAULT_TERMS),
        "lr_all85_linear": _logistic(all_linear),
        "naive_bayes8": _naive_bayes(nb_columns),
        "blend_lr_selected17+xgb_1seed": _rank_blend(_logistic(selected17), _xgb(1)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: python -m models.cv [--data CSV] [--repeats 20] [--folds 5] [--nested-baseline] [--only a,b]."""
    import argparse
    import json

    from models import data as D

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--nested-baseline", action="store_true", help="add the full nested XGBoost grid (slow)"
    )
    parser.add_argument("--only", default=None, help="comma-separated candidate names (baseline always kept)")
    parser.add_argument("--json", default=None, help="write per-fold results here")
    parser.add_argument("--merge", nargs="+", default=None, help="only print the table of these --json files")
    args = parser.parse_args(argv)
    if args.merge:
        merged: dict[str, list[list[dict[str, float]]]] = {}
        for name in args.merge:
            with open(name, encoding="utf-8") as handle:
                for key, reps in json.load(handle).items():
                    merged.setdefault(key, []).extend(reps)
        first = next(iter(merged))
        print(markdown(summarise(merged, first), first))
        return
    matrix = D.load_matrix(D.resolve_data_path(args.data))
    y = matrix[:, D.TARGET_INDEX]
    pool = candidates()
    if args.nested_baseline:
        pool = {**pool, "xgb_baseline_nested_grid": _xgb(3, nested=True)}
    baseline = next(iter(pool))
    if args.only:
        keep = {baseline, *args.only.split(",")}
        pool = {k: v for k, v in pool.items() if k in keep}
    results = run_cv(matrix, y, pool, args.folds, args.repeats, args.seed, progress=print)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle)
    print(markdown(summarise(results, baseline), baseline))


if __name__ == "__main__":
    main()

"""Nested, grouped cross-validation of the caravan-propensity procedure: the one protocol.

Outer loop: grouped (identical feature vectors never split), buyer-stratified k-fold, repeated. Inside each
outer training set the whole procedure runs (models/selection.py): features, binning, regularisation and model
family chosen by an inner grouped CV with the one-standard-error rule, then Platt calibration on the inner
out-of-fold scores. The outer test fold is touched once, to score what the procedure produced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from models import candidates as K
from models.evaluate import COIL_EVAL_BUYERS, COIL_EVAL_ROWS, auc, top_fraction_buyers
from models.folds import outer_splits, twin_groups

OUTER_FOLDS, OUTER_REPEATS, OUTER_SEED = 5, 2, 0  # outer folds depend on the data only, not on --seed
ECE_BINS = 10
SELECTED = "selected"
PROCEDURES: dict[str, tuple[str, ...]] = {  # name -> families the 1-SE rule may choose from
    SELECTED: K.FAMILIES,
    "nb": ("nb",),
    "lr_linear": ("lr_linear",),
    "lr_binned": ("lr_binned",),
    "xgb": ("xgb",),
    "ensemble_lr_xgb": ("ensemble",),
}
LEGACY = {  # procedures of versions trained before this protocol, re-run on the same folds for the gate
    "lr_small8": "L2 logistic on the 8 a-priori terms, C by inner CV (v20261201-231012)",
    "xgb_3seeds": "XGBoost depth 2, 327 rounds, 3 seeds (v20261122-110138)",
    "lr_small8_renested": "lr_small8, its 8 terms re-chosen on the outer training rows (forward stepwise)",
    "xgb_3seeds_renested": "xgb_3seeds with depth, min_child_weight and rounds re-chosen by its own CV grid",
}
RENESTED = {  # legacy procedure whose choices were made on all rows -> it, re-choosing inside the folds
    "lr_small8": "lr_small8_renested",
    "xgb_3seeds": "xgb_3seeds_renested",
}
FoldResult = dict[str, Any]


def ece(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over equal-count bins of the predicted probability."""
    order = np.argsort(p, kind="stable")
    return float(sum(len(b) * abs(p[b].mean() - y[b].mean()) for b in np.array_split(order, bins)) / len(y))


def fold_scores(y: np.ndarray, p: np.ndarray) -> FoldResult:
    """AUC, buyers in the fold's top 20 %, the fold's buyers, recall scaled to CoIL's 238 buyers, ECE."""
    found, buyers = top_fraction_buyers(y, p), int((y > 0).sum())
    return {
        "auc": auc(y, p),
        "top20": found,
        "buyers": buyers,
        "rows": len(y),
        "coil": found / buyers * COIL_EVAL_BUYERS,
        "ece": ece(y, p),
    }


def legacy_fit(name: str, x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Fit a pre-protocol version's procedure; returns its predict function (uncalibrated, as served)."""
    from models import boosting
    from models import propensity as P

    if name == "lr_small8":
        return P.fit_default(x, y, seed).predict
    if name == "lr_small8_renested":
        return P.fit_logistic(x, y, K.stepwise_terms(x, y, len(P.DEFAULT_TERMS)), P.C_GRID, seed).predict
    if name == "xgb_3seeds_renested":
        choice = boosting.select_propensity(x, y, seed)
    else:
        params = {**boosting.PROPENSITY_BASE, "max_depth": 2, "min_child_weight": 1, "nthread": 1}
        choice = boosting.PropensityChoice(params=params, rounds=327, cv_auc=float("nan"), grid=[])
    boosters = boosting.fit_propensity(x, y, choice, [seed, seed + 1, seed + 2])
    return lambda z: boosting.predict_propensity(boosters, z)


def outer_cv(
    matrix: np.ndarray,
    procedures: Sequence[str] = tuple(PROCEDURES),
    legacy: Sequence[str] = (),
    folds: int = OUTER_FOLDS,
    repeats: int = OUTER_REPEATS,
    seed: int = OUTER_SEED,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[FoldResult]]:
    """Outer-fold results per procedure; every procedure sees the same folds (differences are paired)."""
    from models import selection as S
    from models.data import TARGET_INDEX

    y = matrix[:, TARGET_INDEX]
    groups = twin_groups(matrix)
    out: dict[str, list[FoldResult]] = {name: [] for name in [*procedures, *legacy]}
    for repeat, f, train, test in outer_splits(y, groups, folds, repeats, seed):
        fit_seed = 1000 * repeat + f
        started = time.perf_counter()
        inner = S.inner_cv(matrix[train], y[train], groups[train], fit_seed) if procedures else None
        inner_seconds = time.perf_counter() - started
        cache: dict[str, K.Fitted] = {}
        for name in procedures:
            began = time.perf_counter()
            assert inner is not None
            proc = S.choose_and_fit(inner, PROCEDURES[name], matrix[train], y[train], fit_seed, cache)
            out[name].append(
                {
                    **fold_scores(y[test], proc.predict(matrix[test])),
                    "repeat": repeat,
                    "fold": f,
                    "chosen": proc.report["chosen"],
                    "seconds": time.perf_counter() - began,
                }
            )
        for name in legacy:
            began = time.perf_counter()
            predict = legacy_fit(name, matrix[train], y[train], fit_seed)
            out[name].append(
                {
                    **fold_scores(y[test], predict(matrix[test])),
                    "repeat": repeat,
                    "fold": f,
                    "chosen": name,
                    "seconds": time.perf_counter() - began,
                }
            )
        if progress:
            done = (repeat - seed) * folds + f + 1
            progress(f"outer fold {done}/{repeats * folds} (inner CV {inner_seconds:.0f} s)")
    return out


def spread(values: np.ndarray, folds: int, repeats: int) -> float:
    """Standard error of a mean over repeated k-fold results, Nadeau-Bengio corrected.

    Outer folds share training rows, so the naive s/sqrt(n) is too small; the correction adds the
    test/train ratio 1/(k-1) to 1/n.
    """
    if len(values) < 2:
        return float("nan")
    return float(np.std(values, ddof=1) * np.sqrt(1.0 / len(values) + 1.0 / (folds - 1)))


def summarise(results: Mapping[str, list[FoldResult]], folds: int = OUTER_FOLDS) -> dict[str, dict[str, Any]]:
    """Per procedure: outer means with spread, the figure for one 4,000-customer set, ECE, choices."""
    table: dict[str, dict[str, Any]] = {}
    for name, rows in results.items():
        repeats = len({row["repeat"] for row in rows})
        a = np.array([row["auc"] for row in rows])
        recall = np.array([row["top20"] / row["buyers"] for row in rows])
        fold_buyers = float(np.mean([row["buyers"] for row in rows]))
        chosen: dict[str, int] = {}
        for row in rows:
            chosen[row["chosen"]] = chosen.get(row["chosen"], 0) + 1
        table[name] = {
            "auc": round(float(a.mean()), 4),
            "auc_spread": round(spread(a, folds, repeats), 4),
            "top20_recall": round(float(recall.mean()), 4),
            "coil_top20": round(float(recall.mean() * COIL_EVAL_BUYERS), 1),
            "coil_top20_spread": round(spread(recall, folds, repeats) * COIL_EVAL_BUYERS, 1),
            # One set of 238 buyers scatters like a fold times sqrt(fold buyers / 238) (binomial scaling).
            "coil_top20_one_set_sd": round(
                float(recall.std(ddof=1) * np.sqrt(fold_buyers / COIL_EVAL_BUYERS)) * COIL_EVAL_BUYERS, 1
            ),
            "ece": round(float(np.mean([row["ece"] for row in rows])), 4),
            "chosen": chosen,
            "outer_folds": len(rows),
            "fit_seconds_per_fold": round(float(np.mean([row["seconds"] for row in rows])), 2),
        }
    return table


def paired(results: Mapping[str, list[FoldResult]], a: str, b: str, key: str) -> tuple[float, float]:
    """Mean and Nadeau-Bengio spread of the per-fold difference a - b ("coil" or "auc")."""

    def by_fold(name: str) -> dict[tuple[int, int], float]:
        return {(row["repeat"], row["fold"]): float(row[key]) for row in results[name]}

    left, right = by_fold(a), by_fold(b)
    diff = np.array([left[k] - right[k] for k in sorted(left) if k in right])
    repeats = len({k[0] for k in left})
    return float(diff.mean()), spread(diff, len(diff) // max(1, repeats), repeats)


def markdown(
    table: Mapping[str, Mapping[str, Any]],
    results: Mapping[str, list[FoldResult]],
    reference: str | None = None,
) -> str:
    """The summary as a markdown table (paired differences to `reference` when given)."""
    versus = f" vs {reference}: buyers diff ± spread |" if reference else ""
    lines = [
        "| procedure | outer AUC ± spread | top-20 % recall | buyers of 238 in the top 800 of 4,000: "
        f"estimate ± spread (one-set sd) | ECE |{versus} chosen in the outer folds |",
        "|---|---|---|---|---|" + ("---|" if reference else "") + "---|",
    ]
    for name, s in table.items():
        diff = "—"
        if reference and name != reference and reference in results:
            d, sp = paired(results, name, reference, "coil")
            diff = f"{d:+.1f} ± {sp:.1f}"
        chosen = ", ".join(f"{k} ×{v}" for k, v in sorted(s["chosen"].items(), key=lambda kv: -kv[1]))
        lines.append(
            f"| {name} | {s['auc']:.3f} ± {s['auc_spread']:.3f} | {s['top20_recall']:.3f} | "
            f"{s['coil_top20']:.1f} ± {s['coil_top20_spread']:.1f} ({s['coil_top20_one_set_sd']:.1f}) | "
            f"{s['ece']:.4f} |" + (f" {diff} |" if reference else "") + f" {chosen} |"
        )
    return "\n".join(lines)


SCALING = (
    f"Scaling: the estimate for a {COIL_EVAL_ROWS:,}-customer set with {COIL_EVAL_BUYERS} buyers is the mean "
    f"outer-fold recall in the top 20 % times {COIL_EVAL_BUYERS}. It assumes that set's buyers are ranked "
    "like the training customers' (same population, base rate about 6 %); a shifted population is not "
    "covered. "
    "'spread' is the Nadeau-Bengio standard error of the mean over the outer folds; 'one-set sd' is how much "
    f"a single {COIL_EVAL_ROWS:,}-customer set scatters around the estimate (fold sd × sqrt(fold buyers / "
    f"{COIL_EVAL_BUYERS})), so expect a single evaluation within about ± 2 one-set sd."
)


def other_model(
    model: str,
    data: str | None,
    folds: int,
    repeats: int,
    seed: int,
    out: str | None,
    value_grid: str = "served",
    value_rule: str = "one_se",
) -> None:
    """The value model's, the recommender's (or its supervised baselines') nested estimate on the same outer
    folds, printed as JSON."""
    import json

    from models import data as D

    path = D.resolve_data_path(data)
    matrix = D.load_matrix(path)
    if model == "value":
        from models import value_cv

        premium = D.annual_premium(matrix, D.band_midpoints(path.with_name("lookups.json")))
        rows = value_cv.outer_cv(matrix, premium, folds, repeats, seed, print, value_grid, value_rule)
        summary = value_cv.summarise(rows, folds)
    else:
        from models import recommender_baselines, recommender_cv
        from models.train import configure_runtime

        configure_runtime()
        if model == "recommender":
            rows = recommender_cv.outer_cv(matrix, folds, repeats, seed, progress=print)
        else:
            rows = recommender_baselines.outer_cv(matrix, folds, repeats, seed, progress=print)
        summary = recommender_cv.summarise(rows, folds)
    if out:
        with open(out, "w", encoding="utf-8") as handle:
            json.dump(rows, handle)
    print(json.dumps(summary, indent=1))


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: python -m models.cv [--model propensity|value|recommender|recommender_baselines] [--data CSV]
    [--repeats 2] [--folds 5] [--only a,b] [--legacy lr_small8] [--json F] [--value-grid served|wide]
    [--value-rule one_se|best]."""
    import argparse
    import json

    from models import data as D

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None)
    parser.add_argument("--repeats", type=int, default=OUTER_REPEATS)
    parser.add_argument("--folds", type=int, default=OUTER_FOLDS)
    parser.add_argument("--seed", type=int, default=OUTER_SEED)
    parser.add_argument("--only", default=None, help="comma-separated procedures (default: all)")
    parser.add_argument("--legacy", default="lr_small8", help="comma-separated legacy procedures, or ''")
    parser.add_argument("--json", default=None, help="write per-fold results here")
    parser.add_argument("--merge", nargs="+", default=None, help="only print the table of these --json files")
    models = ("propensity", "value", "recommender", "recommender_baselines")
    parser.add_argument("--model", choices=models, default="propensity")
    parser.add_argument(
        "--value-grid", choices=("served", "wide"), default="served", help="value: inner grid"
    )
    parser.add_argument(
        "--value-rule", choices=("one_se", "best"), default="one_se", help="value: inner choice"
    )
    args = parser.parse_args(argv)
    if args.model != "propensity":
        other_model(
            args.model,
            args.data,
            args.folds,
            args.repeats,
            args.seed,
            args.json,
            args.value_grid,
            args.value_rule,
        )
        return
    if args.merge:
        results: dict[str, list[FoldResult]] = {}
        for name in args.merge:
            with open(name, encoding="utf-8") as handle:
                for key, rows in json.load(handle).items():
                    results.setdefault(key, []).extend(rows)
    else:
        matrix = D.load_matrix(D.resolve_data_path(args.data))
        procedures = [n for n in args.only.split(",") if n] if args.only is not None else list(PROCEDURES)
        legacy = [n for n in args.legacy.split(",") if n]
        results = outer_cv(matrix, procedures, legacy, args.folds, args.repeats, args.seed, progress=print)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(results, handle)
    reference = next((n for n in ("lr_small8", "xgb_3seeds") if n in results), None)
    print(markdown(summarise(results, args.folds), results, reference))
    print()
    print(SCALING)


if __name__ == "__main__":
    main()

"""Metrics (propensity, recommender, value) and the markdown + PNG evaluation report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

COIL_EVAL_ROWS, COIL_EVAL_BUYERS, COIL_TOP = 4000, 238, 800


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (rank formulation, ties averaged)."""
    from scipy.stats import rankdata

    pos = y > 0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


TOP_FRACTION = 0.2


def top_fraction_count(rows: int, fraction: float = TOP_FRACTION) -> int:
    """How many customers "the top `fraction`" of `rows` is (the dashboard's gains curve has this point)."""
    return round(fraction * rows)


def top_fraction_buyers(y: np.ndarray, p: np.ndarray, fraction: float = TOP_FRACTION) -> int:
    """Buyers among the highest-scored `fraction` of customers."""
    k = top_fraction_count(len(p), fraction)
    return int(y[np.argsort(-p, kind="stable")[:k]].sum())


def propensity_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC, accuracy/precision/recall/F1 at the threshold, buyers in the top 20 % (also in CoIL terms)."""
    pred = p >= threshold
    pos = y > 0
    tp, fp, fn = int((pred & pos).sum()), int((pred & ~pos).sum()), int((~pred & pos).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    found = top_fraction_buyers(y, p)
    return {
        "auc": auc(y, p),
        "threshold": float(threshold),
        "accuracy": float((pred == pos).mean()),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "rows": len(y),
        "buyers": int(pos.sum()),
        "top20_buyers": found,
        "top20_recall": found / max(1, int(pos.sum())),
        "top20_buyers_scaled_to_coil": found / max(1, int(pos.sum())) * COIL_EVAL_BUYERS,
    }


def hit_rates(top: np.ndarray, hidden: np.ndarray, popular: list[int]) -> dict[str, Any]:
    """HR@3 overall, outside the most popular products, and per hidden product."""
    hit = (top == hidden[:, None]).any(axis=1)
    rare = ~np.isin(hidden, popular)
    from schemas.features import PRODUCT_IDS

    per_product = {PRODUCT_IDS[int(p)]: float(hit[hidden == p].mean()) for p in np.unique(hidden)}
    return {
        "hr3": float(hit.mean()),
        "hr3_outside_top3": float(hit[rare].mean()) if rare.any() else float("nan"),
        "pairs": len(hidden),
        "pairs_outside_top3": int(rare.sum()),
        "per_product": per_product,
    }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def per_product(rates: dict[str, float]) -> dict[str, float | None]:
    """HR@3 per product id in the catalogue's order; None where no pair hid that product (not a 0).

    Older versions keyed the figures by product index as a string ("0" … "21"); both are read.
    """
    from schemas.features import PRODUCT_IDS

    by_id = {(PRODUCT_IDS[int(key)] if key.isdigit() else key): value for key, value in rates.items()}
    return {product: by_id.get(product) for product in PRODUCT_IDS}


def _plots(validation: dict[str, Any], out: Path) -> list[str]:
    """Gains/lift, ROC and HR@3-by-product PNGs; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from schemas.features import PRODUCTS

    y, p = np.asarray(validation["propensity"]["y"]), np.asarray(validation["propensity"]["p"])
    order = np.argsort(-p, kind="stable")
    share = np.arange(1, len(y) + 1) / len(y)
    gains = np.cumsum(y[order]) / max(1, y.sum())
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(share, gains, label="model")
    ax[0].plot([0, 1], [0, 1], "--", label="random")
    ax[0].axvline(TOP_FRACTION, color="grey", lw=0.5, label=f"top {TOP_FRACTION:.0%}")
    ax[0].set(title="Cumulative gains", xlabel="share of customers contacted", ylabel="share of buyers found")
    ax[0].legend()
    ax[1].plot(share[9:], gains[9:] / share[9:])
    ax[1].axhline(1.0, ls="--", color="grey", label="random (lift 1)")
    ax[1].set(title="Lift", xlabel="share of customers contacted", ylabel="lift")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "gains_lift.png", dpi=90)
    plt.close(fig)

    thresholds = np.unique(p)[::-1]
    tpr = [((p >= t) & (y > 0)).sum() / max(1, (y > 0).sum()) for t in thresholds]
    fpr = [((p >= t) & (y == 0)).sum() / max(1, (y == 0).sum()) for t in thresholds]
    fig, ax1 = plt.subplots(figsize=(5, 5))
    ax1.plot([0, *fpr], [0, *tpr], label=f"AUC {validation['metrics']['propensity']['auc']:.3f}")
    ax1.plot([0, 1], [0, 1], "--", label="random")
    ax1.set(title="ROC (caravan propensity)", xlabel="false positive rate", ylabel="true positive rate")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=90)
    plt.close(fig)

    rec = validation["metrics"]["recommender"]
    names = [product.product_id for product in PRODUCTS]
    x = np.arange(len(names))
    fig, ax2 = plt.subplots(figsize=(11, 4))
    for shift, key in ((-0.27, "dqn"), (0.0, "xgboost_multiclass"), (0.27, "popularity")):
        known = [(i, rate) for i, rate in enumerate(per_product(rec[key]["per_product"]).values())
                 if rate is not None]
        ax2.bar(x[[i for i, _ in known]] + shift, [rate for _, rate in known], width=0.27, label=key)
    for i, rate in enumerate(per_product(rec["dqn"]["per_product"]).values()):
        if rate is None:  # a 0 bar and a product never hidden must not look alike
            ax2.text(x[i], 0.02, "no pairs", rotation=90, ha="center", va="bottom", fontsize=7, color="grey")
    ax2.set_xticks(x, names, rotation=70, fontsize=7)
    ax2.set(title="HR@3 by hidden product (validation)", ylabel="HR@3")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out / "hr3_by_product.png", dpi=90)
    plt.close(fig)
    return ["gains_lift.png", "roc.png", "hr3_by_product.png"]


def write_report(manifest: dict[str, Any], validation: dict[str, Any], out: Path) -> Path:
    """Render artifacts/report/report.md with the plots from a version's stored validation data."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = _plots(validation, out)
    m = validation["metrics"]
    pm, rec, val = m["propensity"], m["recommender"], m["value"]
    lines = [
        f"# StreamScore model report — {manifest['version']}",
        "",
        f"Validation split: {manifest['data']['validation_fraction']:.0%} stratified, "
        f"seed {manifest['seed']} "
        f"({pm['rows']} customers, {pm['buyers']} caravan buyers). "
        f"Final fit: {_final_fit(manifest['final_fit'])}.",
        "",
        f"## Caravan propensity ({manifest.get('propensity', {}).get('kind', 'xgboost')})",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in pm.items()),
        "",
        f"CoIL 2000 terms: {pm['top20_buyers_scaled_to_coil']:.1f} of {COIL_EVAL_BUYERS} buyers in the top "
        f"{COIL_TOP} of {COIL_EVAL_ROWS} (winner 121, random ≈ 48).",
        "",
        "## Next-product recommender (DQN), one owned product hidden",
        "",
        "| model | HR@3 | HR@3 outside top-3 products |",
        "|---|---|---|",
        *(
            f"| {k} | {rec[k]['hr3']:.4f} | {rec[k]['hr3_outside_top3']:.4f} |"
            for k in ("dqn", "xgboost_multiclass", "popularity")
        ),
        "",
        "HR@3 by hidden product (\"no pairs\": the validation split never hid it, which is not a 0):",
        "",
        "| product | dqn | xgboost_multiclass | popularity |",
        "|---|---|---|---|",
        *_per_product_rows(rec),
        "",
        "## Value segment (XGBoost regressor)",
        "",
        f"Spearman(score, actual annual premium) = {val['spearman']:.4f}",
        "",
        *(f"![{name}]({name})" for name in pngs),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _final_fit(final_fit: Any) -> str:
    """What each model was finally fitted on, as text (the manifest holds one entry per model)."""
    if isinstance(final_fit, dict):
        return "; ".join(f"{model}: {what}" for model, what in final_fit.items())
    return str(final_fit)


def _per_product_rows(rec: dict[str, Any]) -> list[str]:
    models = ("dqn", "xgboost_multiclass", "popularity")
    table = {model: per_product(rec[model]["per_product"]) for model in models}
    return [
        f"| {product} | " + " | ".join("no pairs" if table[m][product] is None else f"{table[m][product]:.3f}"
                                       for m in models) + " |"
        for product in table["dqn"]
    ]


def load_validation(version_dir: Path) -> dict[str, Any]:
    """The validation predictions stored with a version."""
    data: dict[str, Any] = json.loads((version_dir / "validation.json").read_text(encoding="utf-8"))
    return data

"""The DQN recommender through the nested protocol: trained on each outer training fold (the propensity
model's grouped outer folds), HR@3 measured on the outer test fold's customers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from models import data as D
from models.folds import outer_splits, twin_groups

NOTE = (
    "The DQN settings are fixed (chosen before this protocol on an inner 80/20 split of the seed-0 training "
    "part, which overlaps these outer test folds: not re-chosen inside them, too costly). Fitted inside each "
    "outer training fold: the networks and the 3 most popular products. The isotonic probability map is not "
    "estimated here (it needs held-out episodes; HR@3 does not depend on it)."
)
HIDDEN_SEED_OFFSET = 7  # the one-random-hidden-product draw uses seed + 7 (as train's validation always has)


def evaluate(
    features: np.ndarray,
    seed: int,
    q_fn: Callable[[np.ndarray], np.ndarray],
    popularity: np.ndarray,
    multiclass: Any = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """HR@3 of the DQN, popularity and (if given) the XGBoost multi-class model, one owned product hidden.

    Primary protocol (the issue's): each customer owning a product has one owned product hidden, chosen at
    random (seeded); 3 recommendations among the products not owned after hiding; HR@3 overall and for hidden
    products outside the 3 most popular (by `popularity`, the training rows' ownership). `all_pairs` repeats
    it with every owned product hidden in turn (more pairs, lower variance; weights customers by how many
    products they own). Also returns the (score, hit) pairs of the DQN's recommendations for the calibration.
    """
    from models import boosting, dqn
    from models.evaluate import hit_rates

    top3_popular = [int(i) for i in np.argsort(-popularity)[:3]]
    metrics: dict[str, Any] = {"top3_popular_products": top3_popular}
    calibration = (np.zeros(0), np.zeros(0))
    for protocol in ("one_random", "all_pairs"):
        if protocol == "one_random":
            rows, hidden = dqn.sample_hidden(features, np.random.default_rng(seed + HIDDEN_SEED_OFFSET))
        else:
            rows, hidden = dqn.all_pairs(features)
        visible = dqn.hide(features[rows], hidden)
        top_dqn, score = dqn.recommend(q_fn, visible)
        owned = D.owned(visible)
        pop_scores = np.where(owned, -np.inf, np.broadcast_to(popularity, owned.shape))
        top_pop = np.argsort(-pop_scores, axis=1, kind="stable")[:, :3]
        result = {
            "dqn": hit_rates(top_dqn, hidden, top3_popular),
            "popularity": hit_rates(top_pop, hidden, top3_popular),
        }
        if multiclass is not None:
            mc = boosting.predict(multiclass, dqn.encode(visible, np.zeros_like(owned))).reshape(
                len(rows), -1
            )
            top_mc = np.argsort(-np.where(owned, -np.inf, mc), axis=1, kind="stable")[:, :3]
            result["xgboost_multiclass"] = hit_rates(top_mc, hidden, top3_popular)
        if protocol == "one_random":
            metrics.update(result)
            hits = top_dqn == hidden[:, None]
            calibration = (score.ravel(), hits.ravel().astype(np.float64))
        else:
            metrics["all_pairs"] = {
                name: {k: v for k, v in r.items() if k != "per_product"} for name, r in result.items()
            }
    return metrics, calibration[0], calibration[1]


def outer_cv(
    matrix: np.ndarray,
    folds: int,
    repeats: int,
    seed: int,
    config: Any = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Per outer fold: the DQN (fixed `config`) trained on the outer training rows only; HR@3 on test rows.

    Everything the recommender derives from data comes from the training rows: the network, and the 3 most
    popular products that define "outside the top 3".
    """
    from models import dqn

    config = config or dqn.DQNConfig()
    out: list[dict[str, Any]] = []
    for repeat, f, train, test in outer_splits(
        matrix[:, D.TARGET_INDEX], twin_groups(matrix), folds, repeats, seed
    ):
        fit_seed = 1000 * repeat + f
        q_model, _ = dqn.train_dqn(matrix[train], fit_seed, config)
        q_fn = partial(dqn.forward, dqn.dense_weights(q_model))
        popularity = D.owned(matrix[train]).mean(axis=0)
        metrics, _, _ = evaluate(matrix[test], fit_seed, q_fn, popularity)
        row = {"repeat": repeat, "fold": f, "top3_popular_products": metrics["top3_popular_products"]}
        for protocol, block in (("one_random", metrics), ("all_pairs", metrics["all_pairs"])):
            for model in ("dqn", "popularity"):
                for key in ("hr3", "hr3_outside_top3", "pairs", "pairs_outside_top3"):
                    row[f"{protocol}.{model}.{key}"] = block[model][key]
        out.append(row)
        if progress:
            progress(
                f"recommender outer fold {len(out)}/{folds * repeats}: HR@3 {row['one_random.dqn.hr3']:.3f} "
                f"(outside top 3 {row['one_random.dqn.hr3_outside_top3']:.3f})"
            )
    return out


def summarise(rows: Sequence[dict[str, Any]], folds: int) -> dict[str, Any]:
    """Per figure (protocol.model.metric): mean over the outer folds with its Nadeau-Bengio spread."""
    from models.cv import spread

    repeats = len({r["repeat"] for r in rows})
    table: dict[str, Any] = {"outer_folds": len(rows), "folds_per_repeat": folds}
    for key in rows[0]:
        if key.endswith(("hr3", "hr3_outside_top3")):
            v = np.array([r[key] for r in rows], dtype=np.float64)
            table[key] = {
                "mean": round(float(v.mean()), 4),
                "spread": round(spread(v, folds, repeats), 4),
                "min": round(float(v.min()), 4),
                "max": round(float(v.max()), 4),
            }
    return table

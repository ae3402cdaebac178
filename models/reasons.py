"""Reason codes: per row, the features that pushed propensity and the value score up most and down most.

Contributions are the models' own: XGBoost TreeSHAP (`pred_contribs`) on the boosters, or the linear terms
of a linear propensity model (models.engine.ModelBundle.propensity_contributions owns which). Propensity
contributions are in log-odds, value contributions in the value model's output units.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from schemas.features import FEATURE_NAMES

TOP = 3
COLUMNS_CSV = Path(__file__).resolve().parent / "datasets" / "caravan" / "columns.csv"


@cache
def meanings() -> dict[str, str]:
    """Column name -> its meaning, from the packaged columns.csv."""
    with COLUMNS_CSV.open(encoding="utf-8", newline="") as handle:
        return {row["name"]: row["meaning"] for row in csv.DictReader(handle)}


def _side(
    contributions: np.ndarray, order: np.ndarray, values: Sequence[int], columns: Sequence[int], sign: int
) -> list[dict[str, Any]]:
    """The first TOP features of `order` whose contribution has the given sign."""
    names, meaning = FEATURE_NAMES, meanings()
    picked = []
    for k in order:
        c = float(contributions[k])
        if c * sign <= 0.0:
            break
        name = names[columns[k]]
        picked.append({"feature": name, "meaning": meaning.get(name, name), "value": int(values[columns[k]]),
                       "contribution": round(c, 6)})
        if len(picked) == TOP:
            break
    return picked


def top_reasons(
    contributions: np.ndarray, columns: Sequence[int], features: np.ndarray
) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Per row (up, down): the TOP largest positive and TOP most negative contributions, strongest first.

    contributions: (n, len(columns)) without the bias term; columns: each one's index in the features.
    """
    c = np.asarray(contributions, dtype=np.float64)
    if not len(c):
        return []
    k = min(TOP, c.shape[1])
    up_idx = np.argpartition(-c, k - 1, axis=1)[:, :k]
    down_idx = np.argpartition(c, k - 1, axis=1)[:, :k]
    rows = []
    for i, row in enumerate(c):
        up = up_idx[i][np.argsort(-row[up_idx[i]], kind="stable")]
        down = down_idx[i][np.argsort(row[down_idx[i]], kind="stable")]
        values = features[i].tolist()
        rows.append((_side(row, up, values, columns, 1), _side(row, down, values, columns, -1)))
    return rows


def reason_records(
    features: np.ndarray,
    propensity: tuple[np.ndarray, Sequence[int]],
    segment: tuple[np.ndarray, Sequence[int]],
) -> list[dict[str, list[dict[str, Any]]]]:
    """Per row the Prediction `reasons` field from (contributions, columns) of propensity and segment."""
    prop = top_reasons(propensity[0], propensity[1], features)
    seg = top_reasons(segment[0], segment[1], features)
    return [
        {"propensity_up": pu, "propensity_down": pd, "segment_up": su, "segment_down": sd}
        for (pu, pd), (su, sd) in zip(prop, seg, strict=True)
    ]

"""A shifted copy of the training data, for the drift tests."""

from __future__ import annotations

import numpy as np

from models import data as D
from schemas.features import FEATURE_INDEX, FEATURE_RANGES

SHIFTED = ("MKOOPKLA", "PPERSAUT", "MINKGEM")
"""The features the shifted copy moves; every other column is the training data's own."""


def shifted_training_rows(rows: int, seed: int = 0) -> np.ndarray:
    """`rows` training rows (sampled), with the SHIFTED features moved up by 3 codes (clipped to range)."""
    matrix = D.load_matrix(D.resolve_data_path())
    picked = matrix[np.random.default_rng(seed).choice(len(matrix), rows, replace=False)].copy()
    for name in SHIFTED:
        j = FEATURE_INDEX[name]
        low, high = FEATURE_RANGES[j]
        picked[:, j] = np.clip(picked[:, j] + 3, low, high)
    return picked

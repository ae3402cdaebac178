"""The serving roll-out (`dqn.serve`) is `dqn.recommend` with the NumPy network, bit for bit."""

from __future__ import annotations

import numpy as np

from models import dqn
from models.engine import InferenceEngine
from schemas.features import FEATURE_LOWER, FEATURE_UPPER


def test_serve_equals_recommend_on_random_customers() -> None:
    weights = InferenceEngine.load()._bundle.q_weights
    rng = np.random.default_rng(7)
    matrix = rng.integers(np.array(FEATURE_LOWER), np.array(FEATURE_UPPER) + 1, size=(3000, 86))
    matrix[:1000, 64:] = 0  # customers owning nothing, and others owning many products
    expected = dqn.recommend(lambda state: dqn.forward(weights, state), matrix)
    actions, scores = dqn.serve(weights, matrix)
    assert np.array_equal(actions, expected[0]) and np.array_equal(scores, expected[1])
    assert len({tuple(row) for row in actions.tolist()}) > 10  # a real spread of recommendations

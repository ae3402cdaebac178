"""Serving fast paths equal the models bit for bit: the DQN roll-out and the value tree table."""

from __future__ import annotations

import numpy as np

from models import boosting, dqn
from models.data import VALUE_COLUMNS
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


def test_value_tree_table_equals_xgboost_bit_for_bit() -> None:
    bundle = InferenceEngine.load()._bundle
    rng = np.random.default_rng(11)
    matrix = rng.integers(np.array(FEATURE_LOWER), np.array(FEATURE_UPPER) + 1, size=(2000, 86))
    expected = boosting.predict_value(bundle.value, matrix)
    columns = np.ascontiguousarray(matrix[:, list(VALUE_COLUMNS)], dtype=np.float32)
    assert np.array_equal(bundle.value_table.predict(columns), expected)
    served = boosting.predict_value_served(bundle.value, bundle.value_table, matrix[:3])
    assert np.array_equal(served, expected[:3])
    assert len(np.unique(expected)) > 100  # the trees really split these rows

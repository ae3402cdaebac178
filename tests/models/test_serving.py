"""Serving fast paths equal the models: the DQN roll-out (to float32 rounding) and the value tree table."""

from __future__ import annotations

import numpy as np

from models import boosting, dqn, dqn_serving
from models.data import VALUE_COLUMNS
from models.engine import InferenceEngine
from schemas.features import FEATURE_LOWER, FEATURE_UPPER


def decisive(q: np.ndarray, taken: np.ndarray, margin: float) -> np.ndarray:
    """Rows whose best allowed Q-value leads the runner-up by over `margin`, or with one choice at most."""
    allowed = np.sort(np.where(taken, -np.inf, q), axis=1)
    with np.errstate(invalid="ignore"):  # -inf - -inf: nothing left to choose
        return np.asarray(~(allowed[:, -1] - allowed[:, -2] <= margin))


def test_serve_equals_recommend_on_random_customers() -> None:
    weights = InferenceEngine.load()._bundle.q_weights
    rng = np.random.default_rng(7)
    matrix = rng.integers(np.array(FEATURE_LOWER), np.array(FEATURE_UPPER) + 1, size=(3000, 86))
    matrix[:1000, 64:] = 0  # customers owning nothing, and others owning many products
    expected_actions, expected_scores = dqn.recommend(lambda state: dqn.forward(weights, state), matrix)
    actions, scores = dqn_serving.serve(dqn_serving.ServingNetwork.of(weights), matrix)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)
    # The roll-out's picks are the same wherever no step is a near-tie that rounding could flip.
    roll_actions, _ = dqn.rollout(lambda state: dqn.forward(weights, state), matrix)
    recommended = np.zeros((len(matrix), dqn.N_ACTIONS), dtype=bool)
    clear = np.ones(len(matrix), dtype=bool)
    for step in range(dqn.TOP_K):
        state = dqn.encode(matrix, recommended)
        clear &= decisive(dqn.forward(weights, state), dqn.invalid_mask(state), 1e-5)
        recommended[np.arange(len(matrix)), roll_actions[:, step]] = True
    assert clear.mean() > 0.99
    assert np.array_equal(actions[clear], expected_actions[clear])
    assert len({tuple(row) for row in actions.tolist()}) > 10  # a real spread of recommendations


def test_serve_first_layer_equals_the_encoded_state() -> None:
    weights = InferenceEngine.load()._bundle.q_weights
    network = dqn_serving.ServingNetwork.of(weights)
    rng = np.random.default_rng(8)
    matrix = rng.integers(np.array(FEATURE_LOWER), np.array(FEATURE_UPPER) + 1, size=(500, 86))
    state = dqn.encode(matrix, np.zeros((len(matrix), dqn.N_ACTIONS), dtype=bool))
    owned = state[:, dqn.OWNED_OFFSET : dqn.RECOMMENDED_OFFSET] > 0
    kernel, bias = weights[0]
    pre = network.first_layer(matrix, owned)
    np.testing.assert_allclose(pre, state @ kernel + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(network.q_values(pre), dqn.forward(weights, state), rtol=1e-5, atol=1e-5)


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

"""The DQN's serving pass: `dqn.recommend` over the NumPy network, its first layer computed once per row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.data import RANGE_MAX, owned
from models.dqn import (
    MAINTYPE_OFFSET,
    OWNED_OFFSET,
    RECOMMENDED_OFFSET,
    STATE_DIM,
    SUBTYPE_OFFSET,
    TOP_K,
    category_indices,
)
from schemas.features import FEATURE_COUNT

Dense = list[tuple[np.ndarray, np.ndarray]]

# The state (dqn.encode) is the scaled features, two one-hot blocks, the owned flags and the recommended
# mask. A roll-out step only sets one more mask column, so the first layer's pre-activation is computed
# once and the chosen product's kernel row added per step; the one-hot blocks are a row gather each.
# That drops two of the three first-layer products and 73 of its 181 input columns: 3.6 -> 2.1 µs per
# row (4,000 train.csv rows, one BLAS thread). The sums run in another order than one product over the
# whole state, so results equal `recommend` within float32 rounding (on train.csv: every top-3 list the
# same, scores within 2e-7; tests/models/test_serving.py).


@dataclass(frozen=True)
class ServingNetwork:
    """The Q-network's Dense layers, the first one split by state block."""

    dense_kernel: np.ndarray  # (86 + 22, width): scaled feature columns, then the owned flags
    subtype_rows: np.ndarray  # (41, width): one-hot subtype rows, first-layer bias included
    maintype_rows: np.ndarray  # (10, width)
    recommended_rows: np.ndarray  # (22, width): the mask columns set during a roll-out
    deeper: tuple[tuple[np.ndarray, np.ndarray], ...]  # the later layers, last one linear

    @classmethod
    def of(cls, weights: Dense) -> ServingNetwork:
        """Split the (kernel, bias) pairs of dqn.dense_weights."""
        kernel, bias = weights[0]
        if kernel.shape[0] != STATE_DIM:
            raise ValueError(f"first layer takes {kernel.shape[0]} inputs, the state has {STATE_DIM}")
        scaled = kernel[:FEATURE_COUNT] / RANGE_MAX[:, None]
        return cls(
            dense_kernel=np.ascontiguousarray(
                np.concatenate([scaled, kernel[OWNED_OFFSET:RECOMMENDED_OFFSET]]), dtype=np.float32
            ),
            subtype_rows=np.asarray(kernel[SUBTYPE_OFFSET:MAINTYPE_OFFSET] + bias, dtype=np.float32),
            maintype_rows=np.asarray(kernel[MAINTYPE_OFFSET:OWNED_OFFSET], dtype=np.float32),
            recommended_rows=np.asarray(kernel[RECOMMENDED_OFFSET:], dtype=np.float32),
            deeper=tuple((np.asarray(k, np.float32), np.asarray(b, np.float32)) for k, b in weights[1:]),
        )

    def first_layer(self, features: np.ndarray, owned: np.ndarray) -> np.ndarray:
        """(n, width) pre-activation of the first layer for the initial state (nothing recommended)."""
        dense = np.empty((len(features), FEATURE_COUNT + owned.shape[1]), dtype=np.float32)
        dense[:, :FEATURE_COUNT] = features
        dense[:, FEATURE_COUNT:] = owned
        pre = dense @ self.dense_kernel
        subtype, maintype = category_indices(features)
        pre += self.subtype_rows[subtype]
        pre += self.maintype_rows[maintype]
        return pre

    def q_values(self, pre: np.ndarray) -> np.ndarray:
        """Q-values from a first-layer pre-activation: ReLU hidden layers, linear output."""
        h = np.maximum(pre, 0.0)
        for kernel, bias in self.deeper[:-1]:
            h = h @ kernel
            h += bias
            np.maximum(h, 0.0, out=h)
        kernel, bias = self.deeper[-1]
        q = h @ kernel
        q += bias
        return q


def serve(network: ServingNetwork, features: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """`dqn.recommend` of (n, 86) rows: (n, k) product indices and their initial-state Q-values, best first.

    Greedy masked roll-out (owned and already recommended products excluded), then the k picks ordered by
    their Q-value in the initial state, as `recommend` defines it.
    """
    n = features.shape[0]
    owned_flags = owned(features)
    pre = network.first_layer(features, owned_flags)
    taken = owned_flags.copy()
    actions = np.zeros((n, k), dtype=np.int64)
    rows = np.arange(n)
    q0 = q = network.q_values(pre)
    for step in range(k):
        if step:
            pre += network.recommended_rows[actions[:, step - 1]]
            q = network.q_values(pre)
        actions[:, step] = np.argmax(np.where(taken, -np.inf, q), axis=1)
        taken[rows, actions[:, step]] = True
    scores = q0[rows[:, None], actions].astype(np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")
    return actions[rows[:, None], order], scores[rows[:, None], order]

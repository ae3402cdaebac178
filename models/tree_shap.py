"""Exact path-dependent TreeSHAP (XGBoost's `pred_contribs`) of boosters with small trees, by table look-up.

For one tree, TreeSHAP's contributions of a row depend on the row only through the outcomes of the tree's
splits: with m internal nodes there are at most 2^m outcome patterns. At build time each tree gets, per
pattern, the exact Shapley values of the path-dependent value function v(S) over its distinct features
(a feature in S follows the row's outcome at every node that splits on it; any other feature takes the
cover-weighted mean of both children), the function XGBoost's TreeSHAP computes. Serving is one float32
compare per internal node, a bit-packed pattern per (row, tree), a gather per (tree, feature) and a sum per
column.

Rows must have no missing values (the split's default direction is ignored) and no categorical splits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from math import factorial
from typing import Any

import numpy as np

MAX_INTERNAL_NODES = 7
"""Every tree of depth <= 3; building takes 2^7 patterns x 2^7 subsets per tree (depth 4: 2^15 x 2^15)."""
_SLOTS = 8  # internal-node slots per tree, one byte each of a uint64; unused slots never go left
CHUNK_ROWS = 32
"""Rows per pass: the ~1 MB temporaries of 32 rows are reused heap; from 64 rows on they were mmapped and
page-faulted in anew on every call (measured: 1,000 rows 17 ms in passes of 32, 33-37 ms in one pass)."""
_GATHER_BITS = np.uint64(0x0102040810204080)  # times 8 little-endian 0/1 bytes: byte k to bit 56 + k


class TreeTooLarge(ValueError):
    """A tree has more internal nodes than the table supports, or a split it cannot represent."""


@dataclass(frozen=True)
class ShapTable:
    """Per tree and split-outcome pattern, each distinct feature's TreeSHAP value, for all trees at once."""

    slot_feature: np.ndarray  # (trees * _SLOTS,) column compared at each internal-node slot
    slot_threshold: np.ndarray  # (trees * _SLOTS,) float32; -inf in unused slots
    pair_tree: np.ndarray  # (pairs,) tree of each (tree, feature) pair, pairs ordered by column
    pair_base: np.ndarray  # (pairs,) where the pair's block of one value per pattern starts in phi
    column_starts: np.ndarray  # (columns with a pair,) first pair of each such column
    columns_present: np.ndarray  # (columns with a pair,) their column indices
    phi: np.ndarray  # float64, per (tree, feature) pair in tree order, its Shapley value per pattern
    columns: int
    expected_value: float  # sum over trees of the cover-weighted mean leaf: the bias less the base margin

    @classmethod
    def of(cls, booster: Any) -> ShapTable:
        """Tabulate a single-output gbtree booster; raises TreeTooLarge if a tree does not fit."""
        learner = json.loads(booster.save_raw("json"))["learner"]
        model = learner["gradient_booster"]
        if model.get("name") != "gbtree":
            raise TreeTooLarge(f"booster type {model.get('name')!r} is not gbtree")
        params = learner["learner_model_param"]
        if int(params.get("num_class", 0)) > 1 or int(params.get("num_target", 1)) > 1:
            raise TreeTooLarge("multi-output boosters are not supported")
        trees = [_Tree.of(tree) for tree in model["model"]["trees"]]
        return cls._assemble(trees, int(params["num_feature"]))

    @classmethod
    def _assemble(cls, trees: list[_Tree], columns: int) -> ShapTable:
        slot_feature = np.zeros((len(trees), _SLOTS), dtype=np.int64)
        slot_threshold = np.full((len(trees), _SLOTS), -np.inf, dtype=np.float32)
        pair_tree: list[int] = []
        pair_base: list[int] = []
        pair_column: list[int] = []
        phis: list[np.ndarray] = []
        offset, expected = 0, 0.0
        for t, tree in enumerate(trees):
            slot_feature[t, : len(tree.internal)] = tree.feature[tree.internal]
            slot_threshold[t, : len(tree.internal)] = tree.threshold[tree.internal]
            phi, mean = tree.shapley()
            expected += mean
            for k, column in enumerate(tree.features):
                pair_tree.append(t)
                pair_base.append(offset)
                pair_column.append(int(column))
                phis.append(phi[:, k])
                offset += len(phi)
        order = np.argsort(np.array(pair_column, dtype=np.int64), kind="stable")
        column_of = np.array(pair_column, dtype=np.int64)[order]
        present, starts = np.unique(column_of, return_index=True)
        if len(present) and (present[-1] >= columns or present[0] < 0):
            raise TreeTooLarge("a split uses a feature index outside the booster's features")
        return cls(
            slot_feature=slot_feature.ravel(),
            slot_threshold=slot_threshold.ravel(),
            pair_tree=np.array(pair_tree, dtype=np.intp)[order],
            pair_base=np.array(pair_base, dtype=np.intp)[order],
            column_starts=starts.astype(np.intp),
            columns_present=present.astype(np.intp),
            phi=np.concatenate(phis) if phis else np.zeros(0),
            columns=columns,
            expected_value=expected,
        )

    @property
    def trees(self) -> int:
        """Number of trees tabulated."""
        return len(self.slot_feature) // _SLOTS

    @property
    def nbytes(self) -> int:
        """Memory held by the table's arrays."""
        arrays = (self.slot_feature, self.slot_threshold, self.pair_tree, self.pair_base, self.column_starts,
                  self.columns_present, self.phi)
        return sum(a.nbytes for a in arrays)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(n, columns) float64 TreeSHAP contributions of rows of the booster's columns, without the bias."""
        rows = np.ascontiguousarray(x, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.columns:
            raise ValueError(f"rows must have shape (n, {self.columns}); got {rows.shape}")
        out = np.zeros((len(rows), self.columns), dtype=np.float64)
        if len(self.pair_tree):
            for start in range(0, len(rows), CHUNK_ROWS):
                chunk = rows[start : start + CHUNK_ROWS]
                out[start : start + len(chunk), self.columns_present] = self._present_columns(chunk)
        return out

    def _present_columns(self, rows: np.ndarray) -> np.ndarray:
        """(n, columns with a pair) contributions of a few float32 rows."""
        # np.take along axis 1 is ~2x faster than fancy indexing for the few-row calls of the sync path.
        go_left = np.take(rows, self.slot_feature, axis=1) < self.slot_threshold
        pattern = (go_left.view("<u8") * _GATHER_BITS) >> np.uint64(56)  # (n, trees): slot k is bit k
        index = np.take(pattern.astype(np.intp), self.pair_tree, axis=1)
        index += self.pair_base
        return np.asarray(np.add.reduceat(self.phi.take(index), self.column_starts, axis=1))


@dataclass(frozen=True)
class _Tree:
    """One tree's arrays from XGBoost's JSON model, with its internal nodes in slot order."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    cover: np.ndarray
    internal: np.ndarray  # node ids of the internal nodes; slot k of the pattern is internal[k]
    features: np.ndarray  # the tree's distinct split features, sorted

    @classmethod
    def of(cls, tree: dict[str, Any]) -> _Tree:
        """Read a JSON tree; raises TreeTooLarge for too many internal nodes or categorical splits."""
        left = np.asarray(tree["left_children"], dtype=np.int64)
        internal = np.flatnonzero(left != -1)
        if len(internal) > MAX_INTERNAL_NODES:
            raise TreeTooLarge(f"a tree has {len(internal)} internal nodes (at most {MAX_INTERNAL_NODES})")
        if any(int(kind) != 0 for kind in tree.get("split_type", [])):
            raise TreeTooLarge("categorical splits are not supported")
        feature = np.asarray(tree["split_indices"], dtype=np.int64)
        return cls(
            left=left,
            right=np.asarray(tree["right_children"], dtype=np.int64),
            feature=feature,
            threshold=np.asarray(tree["split_conditions"], dtype=np.float32),
            cover=np.asarray(tree["sum_hessian"], dtype=np.float64),
            internal=internal,
            features=np.unique(feature[internal]),
        )

    def shapley(self) -> tuple[np.ndarray, float]:
        """(patterns, distinct features) Shapley values of v(S) per outcome pattern, and v(empty set)."""
        m, d = len(self.internal), len(self.features)
        slot_of = {int(node): k for k, node in enumerate(self.internal)}
        goes_left = _pattern_bits(m)  # (patterns, m)
        member = _subset_members(d)  # (subsets, d)
        position = {int(f): i for i, f in enumerate(self.features)}
        leaf_value = self.threshold.astype(np.float64)  # a leaf's split_condition holds its value

        def value(node: int) -> np.ndarray:
            """v(S) of the subtree at node as a (patterns, subsets) array (broadcastable)."""
            if self.left[node] == -1:
                return np.full((1, 1), leaf_value[node])
            lo, hi = int(self.left[node]), int(self.right[node])
            v_left, v_right = value(lo), value(hi)
            # XGBoost's zero fractions are each child's cover over the node's own cover.
            unknown = (self.cover[lo] * v_left + self.cover[hi] * v_right) / self.cover[node]
            known = np.where(goes_left[:, slot_of[node], None], v_left, v_right)
            return np.where(member[None, :, position[int(self.feature[node])]], known, unknown)

        v = np.broadcast_to(value(0), (1 << m, 1 << d))
        return v @ _shapley_weights(d), float(v[0, 0])


@cache
def _pattern_bits(m: int) -> np.ndarray:
    """(2^m, m) bool: bit k of pattern p, the outcome (goes left) of slot k."""
    return ((np.arange(1 << m)[:, None] >> np.arange(m)) & 1).astype(bool)


@cache
def _subset_members(d: int) -> np.ndarray:
    """(2^d, d) bool: whether feature i is in subset s (bit i of s)."""
    return ((np.arange(1 << d)[:, None] >> np.arange(d)) & 1).astype(bool)


@cache
def _shapley_weights(d: int) -> np.ndarray:
    """(2^d, d) matrix W with phi = v @ W: +w(|S|-1) where i is in S, -w(|S|) where it is not."""
    member = _subset_members(d)
    size = member.sum(axis=1)
    weight = np.array([factorial(k) * factorial(d - k - 1) / factorial(d) for k in range(d)] + [0.0])
    return np.where(member, weight[np.maximum(size - 1, 0)][:, None], -weight[size][:, None])

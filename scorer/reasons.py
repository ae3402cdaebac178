"""Reason codes on the stream (STREAMSCORE_REASONS=true): added to each scored row in the inference thread.

Off by default: TreeSHAP on the boosters costs far more per event than scoring it (bench/bench_reasons.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from models.engine import InferenceEngine

log = logging.getLogger(__name__)


def with_reasons(engine: InferenceEngine, matrix: np.ndarray, rows: list[Any]) -> list[Any]:
    """The rows, each scored one carrying `reasons`; if they cannot be computed, the rows go out without."""
    scored = [i for i, row in enumerate(rows) if isinstance(row, dict)]
    if not scored:
        return rows
    try:
        found = engine.reasons(matrix[scored])
    except Exception as error:  # reasons are an explanation: never a reason to fail a prediction
        log.warning("reason codes failed; predictions sent without", extra={"error": str(error)})
        return rows
    out = list(rows)
    for i, reasons in zip(scored, found, strict=True):
        out[i] = {**rows[i], "reasons": reasons}
    return out

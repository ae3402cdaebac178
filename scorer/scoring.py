"""Pure micro-batch logic: decode records, score them in one engine call, build predictions/dead letters."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import ValidationError

from schemas.features import FEATURE_COUNT
from schemas.messages import DeadLetter, FeatureEvent
from schemas.wire import (
    EventIds,
    SourceRecord,
    dead_letter,
    error_stage,
    fast_event,
    prediction_json,
    rows_in_range,
    utc_now,
    validation_reason,
)

if TYPE_CHECKING:
    from models.engine import ScoreBatch

log = logging.getLogger(__name__)

class Engine(Protocol):
    """What the scorer needs from models.engine.InferenceEngine."""

    def score(self, features: np.ndarray) -> ScoreBatch:
        """Score an (n, 86) matrix."""
        ...


@dataclass
class Scored:
    """One micro-batch after inference: prediction payloads keyed by customer, plus its dead letters."""

    predictions: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, DeadLetter]] = field(default_factory=list)


def decode_records(
    records: Sequence[SourceRecord],
) -> tuple[list[tuple[SourceRecord, EventIds]], np.ndarray, list[tuple[bytes | None, DeadLetter]]]:
    """Validate records as FeatureEvents: (valid records with ids, their (n, 86) features, dead letters).

    Canonical events take a cheap path (orjson plus exact checks); any other record is validated by
    FeatureEvent itself, so acceptance, defaults and dead-letter reasons are exactly the contract's.
    """
    fast = [fast_event(record.value) for record in records]
    in_range = iter(rows_in_range([item[1] for item in fast if item is not None]))
    valid: list[tuple[SourceRecord, EventIds]] = []
    rows: list[Sequence[int]] = []
    dead: list[tuple[bytes | None, DeadLetter]] = []
    for record, item in zip(records, fast, strict=True):
        if item is not None and next(in_range):
            valid.append((record, item[0]))
            rows.append(item[1])
            continue
        try:
            event = FeatureEvent.model_validate_json(record.value or b"")
        except ValidationError as error:
            dead.append((record.key, dead_letter(record, error_stage(error), validation_reason(error))))
            continue
        valid.append((record, EventIds.of(event)))
        rows.append(event.features)
    matrix = np.array(rows, dtype=np.int64) if rows else np.empty((0, FEATURE_COUNT), dtype=np.int64)
    return valid, matrix, dead


def _invalid_rows(batch: ScoreBatch) -> np.ndarray:
    """Rows whose outputs are non-finite or outside their contract ranges."""
    probability = np.asarray(batch.product_probability, dtype=np.float64)
    propensity = np.asarray(batch.propensity, dtype=np.float64)
    score = np.asarray(batch.segment_score, dtype=np.float64)
    ok = (
        np.isfinite(probability).all(axis=1)
        & (probability >= 0.0).all(axis=1)
        & (probability <= 1.0).all(axis=1)
        & np.isfinite(propensity)
        & (propensity >= 0.0)
        & (propensity <= 1.0)
        & np.isfinite(score)
        & (score >= 0.0)
        & (score <= 100.0)
    )
    return np.flatnonzero(~ok)


def score_rows(engine: Engine, matrix: np.ndarray) -> list[dict[str, Any] | str]:
    """Per row the prediction fields, or the reason that row failed inference.

    One engine call for the whole matrix; only if it raises is each row scored alone,
    so a poison row is isolated without slowing the normal path.
    """
    try:
        batch = engine.score(matrix)
        if len(batch) != len(matrix):
            raise ValueError(f"engine returned {len(batch)} rows for {len(matrix)}")
    except Exception as error:
        log.warning(
            "batch inference failed; scoring row by row", extra={"rows": len(matrix), "error": str(error)}
        )
        return [_score_one(engine, matrix[i : i + 1]) for i in range(len(matrix))]
    results: list[dict[str, Any] | str] = list(batch.records())
    for row in _invalid_rows(batch):
        results[int(row)] = "model output is non-finite or out of range"
    return results


def _score_one(engine: Engine, row: np.ndarray) -> dict[str, Any] | str:
    try:
        batch = engine.score(row)
    except Exception as error:
        return f"inference failed: {type(error).__name__}: {error}"
    if len(batch) != 1 or len(_invalid_rows(batch)):
        return "model output is non-finite or out of range"
    record: dict[str, Any] = batch.records()[0]
    return record


def assemble(valid: Sequence[tuple[SourceRecord, EventIds]], rows: Sequence[dict[str, Any] | str]) -> Scored:
    """Pair each event with its scored row: a prediction payload, or a dead letter with the reason."""
    scored = Scored()
    scored_at = utc_now()
    for (record, event), row in zip(valid, rows, strict=True):
        if isinstance(row, str):
            scored.dead_letters.append((record.key, dead_letter(record, "inference", row, event)))
        else:
            scored.predictions.append((event.customer_id.encode(), prediction_json(event, row, scored_at)))
    return scored

"""Pure micro-batch logic: decode records, score them in one engine call, build predictions/dead letters."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import ValidationError

from schemas.event_decoding import fast_events
from schemas.feature_log import pack_rows
from schemas.features import FEATURE_COUNT
from schemas.messages import DeadLetter, FeatureEvent
from schemas.wire import (
    EventIds,
    SourceRecord,
    dead_letter,
    error_stage,
    prediction_json,
    predictions_json,
    utc_now,
    validation_reason,
)

if TYPE_CHECKING:
    from models.engine import ScoreBatch

log = logging.getLogger(__name__)
OUT_OF_RANGE = "model output is non-finite or out of range"


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
    origins: list[SourceRecord] = field(default_factory=list)  # the consumed record of each prediction


def decode_records(
    records: Sequence[SourceRecord],
) -> tuple[list[tuple[SourceRecord, EventIds]], np.ndarray, list[tuple[bytes | None, DeadLetter]]]:
    """Validate records as FeatureEvents: (valid records with ids, their (n, 86) features, dead letters).

    Canonical events are parsed straight into the matrix and range-checked by one NumPy comparison; only
    the records that fail that are validated by FeatureEvent itself, so acceptance, defaults and
    dead-letter reasons are exactly the contract's. Record order is kept.
    """
    fast = fast_events([record.value for record in records])
    if len(fast.index) == len(records):
        return list(zip(records, fast.ids, strict=True)), fast.matrix, []
    good = {i: (k, ids) for k, (i, ids) in enumerate(zip(fast.index, fast.ids, strict=True))}
    matrix = fast.matrix
    valid: list[tuple[SourceRecord, EventIds]] = []
    order: list[int] = []  # per valid record: its row in `matrix`, or -1 - its row in `slow_rows`
    slow_rows: list[Sequence[int]] = []
    dead: list[tuple[bytes | None, DeadLetter]] = []
    for i, record in enumerate(records):
        if (hit := good.get(i)) is not None:
            valid.append((record, hit[1]))
            order.append(hit[0])
            continue
        try:
            event = FeatureEvent.model_validate_json(record.value or b"")
        except ValidationError as error:
            dead.append((record.key, dead_letter(record, error_stage(error), validation_reason(error))))
            continue
        valid.append((record, EventIds.of(event)))
        order.append(-1 - len(slow_rows))
        slow_rows.append(event.features)
    slow = np.array(slow_rows, dtype=np.int64).reshape(len(slow_rows), FEATURE_COUNT)
    rows = np.array([k if k >= 0 else len(matrix) - 1 - k for k in order], dtype=np.int64)
    return valid, np.concatenate([matrix, slow])[rows], dead


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


def score_matrix(engine: Engine, matrix: np.ndarray) -> ScoreBatch | list[dict[str, Any] | str]:
    """The engine's result for the whole matrix in one call; only if that raises, each row scored alone
    (per row the prediction fields or the reason it failed), so a poison row is isolated without slowing
    the normal path."""
    try:
        batch = engine.score(matrix)
        if len(batch) != len(matrix):
            raise ValueError(f"engine returned {len(batch)} rows for {len(matrix)}")
    except Exception as error:
        log.warning(
            "batch inference failed; scoring row by row", extra={"rows": len(matrix), "error": str(error)}
        )
        return [_score_one(engine, matrix[i : i + 1]) for i in range(len(matrix))]
    return batch


def score_rows(engine: Engine, matrix: np.ndarray) -> list[dict[str, Any] | str]:
    """Per row the prediction fields, or the reason that row failed inference (see score_matrix)."""
    return rows_of(score_matrix(engine, matrix))


def valid_rows(batch: ScoreBatch) -> np.ndarray:
    """Boolean mask of the rows whose outputs are within their contract ranges."""
    ok = np.ones(len(batch), dtype=bool)
    ok[_invalid_rows(batch)] = False
    return ok


def rows_of(result: ScoreBatch | list[dict[str, Any] | str]) -> list[dict[str, Any] | str]:
    """Per row the prediction fields, or the reason that row failed inference."""
    if isinstance(result, list):
        return result
    rows: list[dict[str, Any] | str] = list(result.records())
    for row in _invalid_rows(result):
        rows[int(row)] = OUT_OF_RANGE
    return rows


def _score_one(engine: Engine, row: np.ndarray) -> dict[str, Any] | str:
    try:
        batch = engine.score(row)
    except Exception as error:
        return f"inference failed: {type(error).__name__}: {error}"
    if len(batch) != 1 or len(_invalid_rows(batch)):
        return OUT_OF_RANGE
    record: dict[str, Any] = batch.records()[0]
    return record


def assemble(
    valid: Sequence[tuple[SourceRecord, EventIds]],
    result: ScoreBatch | Sequence[dict[str, Any] | str],
    matrix: np.ndarray | None = None,
) -> Scored:
    """Pair each event with its scored row: a prediction payload, or a dead letter with the reason.

    A one-call engine result is encoded in one pass over its arrays; row-by-row results one by one. With
    the events' feature matrix, each prediction carries the values it was scored on (the feature log).
    """
    scored = Scored()
    scored_at = utc_now()
    packed = pack_rows(matrix) if matrix is not None and len(valid) else None
    if isinstance(result, Sequence):
        for i, ((record, event), row) in enumerate(zip(valid, result, strict=True)):
            if isinstance(row, str):
                scored.dead_letters.append((record.key, dead_letter(record, "inference", row, event)))
            else:
                fields = row if packed is None else {**row, "features_packed": packed[i]}
                payload = prediction_json(event, fields, scored_at)
                scored.predictions.append((event.customer_id.encode(), payload))
                scored.origins.append(record)
        return scored
    if len(result) != len(valid):
        raise ValueError(f"{len(result)} scored rows for {len(valid)} events")
    bad = _invalid_rows(result)
    keep: np.ndarray | slice = slice(None)
    if len(bad):
        keep = np.ones(len(valid), dtype=bool)
        keep[bad] = False
    for row in bad.tolist():
        record, event = valid[row]
        scored.dead_letters.append((record.key, dead_letter(record, "inference", OUT_OF_RANGE, event)))
    dropped = set(bad.tolist())
    kept = [item for i, item in enumerate(valid) if i not in dropped] if dropped else valid
    events = [event for _, event in kept]
    payloads = predictions_json(
        events,
        result.model_version,
        result.product_index[keep],
        result.product_probability[keep],
        result.propensity[keep],
        result.segment_score[keep],
        np.asarray(result.segment_label[keep]).tolist(),
        scored_at,
        packed if packed is None or not dropped else [t for i, t in enumerate(packed) if i not in dropped],
    )
    scored.predictions = [(e.customer_id.encode(), p) for e, p in zip(events, payloads, strict=True)]
    scored.origins = [record for record, _ in kept]
    return scored

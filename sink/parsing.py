"""Prediction records to storable rows: a cheap exact path for canonical messages, the contract otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat

import msgspec
import numpy as np
from pydantic import ValidationError

from schemas.columns import all_fullmatch, all_uuid_text
from schemas.feature_log import all_packed, stored, stored_rows
from schemas.messages import SOURCES, DeadLetter, Prediction
from schemas.wire import (
    CUSTOMER_ID,
    UUID_TEXT,
    SourceRecord,
    dead_letter,
    error_stage,
    is_timestamp,
    validation_reason,
)
from store.predictions import MODEL_VERSION_MAX, PredictionRow

_LABELS = frozenset(("high", "medium", "low"))


class _Recommendation(msgspec.Struct, forbid_unknown_fields=True):
    product_id: str
    name: str
    probability: float


class _Segment(msgspec.Struct, forbid_unknown_fields=True):
    label: str
    score: float


class _CanonicalPrediction(msgspec.Struct, forbid_unknown_fields=True):
    """The shape fast_row accepts (types checked in C); values are checked after decoding."""

    event_id: str
    customer_id: str
    model_version: str
    recommendations: list[_Recommendation]
    propensity: float
    segment: _Segment
    scored_at: str
    source: str
    batch_id: str | None = None
    schema_version: int = 1
    reasons: None = None  # reason codes (optional, rare on the stream) take the contract's full validation
    features_packed: str | None = None  # the feature log (schemas/feature_log.py)


_DECODER = msgspec.json.Decoder(_CanonicalPrediction)
_ENCODER = msgspec.json.Encoder()


def _unit(value: float, high: float = 1.0) -> bool:
    """Within [0, high] (false for NaN)."""
    return 0.0 <= value <= high


def holds_nul_escape(text: bytes) -> bool:
    """JSON text with a NUL escape (\\u0000), which Postgres text and jsonb cannot store; one memchr for a
    backslash first, since canonical messages escape nothing."""
    return b"\\" in text and b"\\u0000" in text


def fast_row(value: bytes) -> PredictionRow | None:
    """The row of a canonical, storable Prediction message; None means: validate it fully.

    Accepts a strict subset of what Prediction accepts (canonical lowercase UUIDs, JSON numbers, aware
    ISO timestamps, no NUL characters, storable model_version), so results never differ.
    """
    if holds_nul_escape(value):
        return None
    try:
        raw = _DECODER.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    recommendations, segment, batch_id = raw.recommendations, raw.segment, raw.batch_id
    if (
        UUID_TEXT.fullmatch(raw.event_id) is None
        or CUSTOMER_ID.fullmatch(raw.customer_id) is None
        or len(raw.model_version) > MODEL_VERSION_MAX
        or len(recommendations) != 3
        or not all(_unit(r.probability) for r in recommendations)
        or not _unit(raw.propensity)
        or segment.label not in _LABELS
        or not _unit(segment.score, 100.0)
        or not is_timestamp(raw.scored_at)
        or raw.source not in SOURCES
        or (batch_id is not None and UUID_TEXT.fullmatch(batch_id) is None)
        or raw.schema_version != 1
        or (raw.features_packed is not None and not all_packed([raw.features_packed]))
    ):
        return None
    return PredictionRow(
        raw.event_id,
        raw.customer_id,
        raw.model_version,
        raw.source,
        batch_id,
        _ENCODER.encode(recommendations).decode(),
        raw.propensity,
        segment.label,
        segment.score,
        raw.scored_at,
        None,
        None if raw.features_packed is None else stored(raw.features_packed),
    )


def _decoded(value: bytes) -> _CanonicalPrediction | None:
    """The canonical shape of a record, or None."""
    try:
        return _DECODER.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def _within(values: list[float], high: float) -> bool:
    """Every value within [0, high] (false for NaN), in one NumPy comparison."""
    array = np.array(values, dtype=np.float64)
    return bool(np.all((array >= 0.0) & (array <= high)))


def _aligned(packed: Sequence[str | None], features: Sequence[bytes]) -> list[bytes | None]:
    """The stored features in the places of the records that carried them (None elsewhere)."""
    made = iter(features)
    return [None if p is None else next(made) for p in packed]


def fast_rows(values: Sequence[bytes]) -> list[PredictionRow | None]:
    """fast_row of every value, with each check run once per column when the batch passes them all.

    A batch where any decoded record fails a check (or any value holds a NUL escape) takes fast_row
    record by record, so the result is always exactly [fast_row(v) for v in values].
    """
    decoded = [_decoded(value) for value in values]
    ok = [raw for raw in decoded if raw is not None]
    if not ok or holds_nul_escape(b"".join(values)):
        return [None if raw is None else fast_row(value) for raw, value in zip(decoded, values, strict=True)]
    event_ids = [raw.event_id for raw in ok]
    customers = [raw.customer_id for raw in ok]
    versions = [raw.model_version for raw in ok]
    recommendations = [raw.recommendations for raw in ok]
    segments = [raw.segment for raw in ok]
    labels = [segment.label for segment in segments]
    scores = [segment.score for segment in segments]
    propensities = [raw.propensity for raw in ok]
    stamps = [raw.scored_at for raw in ok]
    sources = [raw.source for raw in ok]
    batch_ids = [raw.batch_id for raw in ok]
    packed = [raw.features_packed for raw in ok]
    logged = [p for p in packed if p is not None]
    features = stored_rows(logged) if logged else []
    if not (
        all_uuid_text(event_ids)
        and all_fullmatch(CUSTOMER_ID, customers)
        and max(map(len, versions)) <= MODEL_VERSION_MAX
        and set(map(len, recommendations)) == {3}
        and _within([r.probability for three in recommendations for r in three], 1.0)
        and _within(propensities, 1.0)
        and set(labels) <= _LABELS
        and _within(scores, 100.0)
        and all(map(is_timestamp, set(stamps)))
        and set(sources) <= SOURCES
        and all_uuid_text([b for b in batch_ids if b is not None])
        and {raw.schema_version for raw in ok} == {1}
        and features is not None
    ):
        return [None if raw is None else fast_row(value) for raw, value in zip(decoded, values, strict=True)]
    texts = _ENCODER.encode_lines(recommendations).decode().split("\n")[:-1]  # each line ends in \n
    rows: list[PredictionRow | None] = list(map(PredictionRow._make, zip(
        event_ids, customers, versions, sources, batch_ids, texts, propensities, labels, scores, stamps,
        repeat(None), features if len(features) == len(packed) else _aligned(packed, features), repeat(None),
    )))
    if len(ok) == len(decoded):
        return rows
    made = iter(rows)
    return [None if raw is None else next(made) for raw in decoded]


def unstorable(prediction: Prediction, raw: bytes) -> str | None:
    """Why Postgres would reject a contract-valid prediction (which would otherwise stall every retry)."""
    if holds_nul_escape(raw):
        return "contains a NUL character (\\u0000), which Postgres text and jsonb cannot store"
    if len(prediction.model_version) > MODEL_VERSION_MAX:
        return f"model_version: longer than {MODEL_VERSION_MAX} characters"
    return None


def parse_predictions(
    records: Sequence[SourceRecord],
) -> tuple[list[tuple[SourceRecord, PredictionRow]], list[tuple[bytes | None, DeadLetter]]]:
    """Validate each record as a Prediction; failures become dead letters naming the bad fields."""
    valid: list[tuple[SourceRecord, PredictionRow]] = []
    dead: list[tuple[bytes | None, DeadLetter]] = []
    values = [record.value or b"" for record in records]
    for record, value, row in zip(records, values, fast_rows(values), strict=True):
        if row is not None:
            valid.append((record, row))
            continue
        try:
            prediction = Prediction.model_validate_json(value)
        except ValidationError as error:
            reason = f"invalid prediction: {validation_reason(error)}"
            letter = dead_letter(record, error_stage(error), reason)
            dead.append((record.key, letter))
            continue
        if problem := unstorable(prediction, value):
            dead.append((record.key, dead_letter(record, "validation", f"invalid prediction: {problem}")))
            continue
        valid.append((record, PredictionRow.of(prediction)))
    return valid, dead

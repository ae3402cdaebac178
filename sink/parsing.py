"""Prediction records to storable rows: a cheap exact path for canonical messages, the contract otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import ValidationError

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

_KEYS = frozenset(Prediction.model_fields)
_REQUIRED = _KEYS - {"schema_version", "batch_id", "reasons"}
_RECOMMENDATION_KEYS = {"product_id", "name", "probability"}
_SEGMENT_KEYS = {"label", "score"}
_LABELS = frozenset(("high", "medium", "low"))


def _unit(value: Any, high: float = 1.0) -> bool:
    """A JSON float within [0, high] (ints and anything else take the full validation)."""
    return type(value) is float and 0.0 <= value <= high


def _recommendation_ok(item: Any) -> bool:
    return (
        type(item) is dict
        and item.keys() == _RECOMMENDATION_KEYS
        and type(item["product_id"]) is str
        and type(item["name"]) is str
        and _unit(item["probability"])
    )


def fast_row(value: bytes) -> PredictionRow | None:
    """The row of a canonical, storable Prediction message; None means: validate it fully.

    Accepts a strict subset of what Prediction accepts (canonical lowercase UUIDs, float numbers,
    aware ISO timestamps, no NUL characters, storable model_version), so results never differ.
    """
    if b"\\u0000" in value:
        return None
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(raw) is not dict or not _REQUIRED <= raw.keys() <= _KEYS or raw.get("reasons") is not None:
        return None  # reason codes (optional, rare on the stream) are validated by the contract itself
    event_id, customer, model_version = raw["event_id"], raw["customer_id"], raw["model_version"]
    recommendations, segment, source = raw["recommendations"], raw["segment"], raw["source"]
    batch_id, version = raw.get("batch_id"), raw.get("schema_version", 1)
    if (
        type(event_id) is not str
        or UUID_TEXT.fullmatch(event_id) is None
        or type(customer) is not str
        or CUSTOMER_ID.fullmatch(customer) is None
        or type(model_version) is not str
        or len(model_version) > MODEL_VERSION_MAX
        or type(recommendations) is not list
        or len(recommendations) != 3
        or not all(map(_recommendation_ok, recommendations))
        or not _unit(raw["propensity"])
        or type(segment) is not dict
        or segment.keys() != _SEGMENT_KEYS
        or type(segment["label"]) is not str
        or segment["label"] not in _LABELS
        or not _unit(segment["score"], 100.0)
        or not is_timestamp(raw["scored_at"])
        or type(source) is not str
        or source not in SOURCES
        or (batch_id is not None and (type(batch_id) is not str or UUID_TEXT.fullmatch(batch_id) is None))
        or type(version) is not int
        or version != 1
    ):
        return None
    return PredictionRow(
        event_id,
        customer,
        model_version,
        source,
        batch_id,
        orjson.dumps(recommendations).decode(),
        raw["propensity"],
        segment["label"],
        segment["score"],
        raw["scored_at"],
    )


def unstorable(prediction: Prediction, raw: bytes) -> str | None:
    """Why Postgres would reject a contract-valid prediction (which would otherwise stall every retry)."""
    if b"\\u0000" in raw:
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
    for record in records:
        value = record.value or b""
        row = fast_row(value)
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

"""Prediction records to storable rows: a cheap exact path for canonical messages, the contract otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from schemas.messages import DeadLetter, Prediction
from scorer.scoring import (
    CUSTOMER_ID,
    UUID_TEXT,
    SourceRecord,
    Stage,
    dead_letter,
    is_timestamp,
    validation_reason,
)

MODEL_VERSION_MAX = 64
"""Width of predictions.model_version / customers.model_version / segments.model_version."""

_KEYS = frozenset(Prediction.model_fields)
_REQUIRED = _KEYS - {"schema_version", "batch_id"}
_RECOMMENDATION_KEYS = {"product_id", "name", "probability"}
_SEGMENT_KEYS = {"label", "score"}
_LABELS = frozenset(("high", "medium", "low"))
_SOURCES = frozenset(("event", "batch", "sync"))


class PredictionRow(NamedTuple):
    """One prediction as the predictions table stores it (ids and timestamp as canonical text)."""

    event_id: str
    customer_id: str
    model_version: str
    source: str
    batch_id: str | None
    recommendations: str
    propensity: float
    segment_label: str
    segment_score: float
    scored_at: str

    @classmethod
    def of(cls, prediction: Prediction) -> PredictionRow:
        """The row of a validated Prediction (a naive scored_at is local time, as asyncpg reads it)."""
        recommendations = orjson.dumps(
            [
                {"product_id": r.product_id, "name": r.name, "probability": r.probability}
                for r in prediction.recommendations
            ]
        ).decode()
        return cls(
            str(prediction.event_id),
            prediction.customer_id,
            prediction.model_version,
            prediction.source,
            str(prediction.batch_id) if prediction.batch_id else None,
            recommendations,
            prediction.propensity,
            prediction.segment.label,
            prediction.segment.score,
            prediction.scored_at.astimezone(UTC).isoformat(),
        )


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
    if type(raw) is not dict or not _REQUIRED <= raw.keys() <= _KEYS:
        return None
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
        or source not in _SOURCES
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
            stage: Stage = (
                "decode" if any(e["type"] == "json_invalid" for e in error.errors()) else "validation"
            )
            letter = dead_letter(record, stage, f"invalid prediction: {validation_reason(error)}")
            dead.append((record.key, letter))
            continue
        if problem := unstorable(prediction, value):
            dead.append((record.key, dead_letter(record, "validation", f"invalid prediction: {problem}")))
            continue
        valid.append((record, PredictionRow.of(prediction)))
    return valid, dead

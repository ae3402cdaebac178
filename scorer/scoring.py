"""Pure micro-batch logic: decode records, score them in one engine call, build predictions/dead letters."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol
from uuid import UUID

import numpy as np
import orjson
from pydantic import ValidationError

from schemas.features import FEATURE_COUNT, FEATURE_RANGES
from schemas.messages import CUSTOMER_ID_PATTERN, DeadLetter, FeatureEvent

if TYPE_CHECKING:
    from models.engine import ScoreBatch

log = logging.getLogger(__name__)

Stage = Literal["decode", "validation", "inference", "publish"]


class SourceRecord(Protocol):
    """The parts of a consumed Kafka record the scorer needs (aiokafka ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Engine(Protocol):
    """What the scorer needs from models.engine.InferenceEngine."""

    def score(self, features: np.ndarray) -> ScoreBatch:
        """Score an (n, 86) matrix."""
        ...


@dataclass(frozen=True, slots=True)
class EventIds:
    """What the scorer carries forward from a valid FeatureEvent (ids as canonical strings)."""

    event_id: str
    customer_id: str
    source: str
    batch_id: str | None

    @classmethod
    def of(cls, event: FeatureEvent) -> EventIds:
        """The ids of a pydantic-validated event."""
        batch_id = str(event.batch_id) if event.batch_id else None
        return cls(str(event.event_id), event.customer_id, event.source, batch_id)


@dataclass
class Scored:
    """One micro-batch after inference: prediction payloads keyed by customer, plus its dead letters."""

    predictions: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, DeadLetter]] = field(default_factory=list)


def validation_reason(error: ValidationError) -> str:
    """Compact `field: message` list of a pydantic error, naming each bad field."""
    parts = []
    for item in error.errors(include_url=False)[:5]:
        location = ".".join(str(part) for part in item["loc"]) or "message"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def _uuid_or_none(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value is not None else None
    except ValueError:
        return None


def dead_letter(record: SourceRecord, stage: Stage, reason: str, event: EventIds | None = None) -> DeadLetter:
    """A dead letter for a record, with whatever ids can be recovered from it."""
    payload = (record.value or b"").decode("utf-8", errors="replace")
    if event is not None:
        ids: dict[str, Any] = {
            "event_id": UUID(event.event_id),
            "customer_id": event.customer_id,
            "batch_id": UUID(event.batch_id) if event.batch_id else None,
        }
    else:
        try:
            raw = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            raw = None
        raw = raw if isinstance(raw, dict) else {}
        customer = raw.get("customer_id")
        ids = {
            "event_id": _uuid_or_none(raw.get("event_id")),
            "customer_id": customer[:255] if isinstance(customer, str) else None,
            "batch_id": _uuid_or_none(raw.get("batch_id")),
        }
    return DeadLetter(
        payload=payload,
        reason=reason,
        stage=stage,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        **ids,
    )


UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
_EVENT_KEYS = frozenset(FeatureEvent.model_fields)
_SOURCES = frozenset(("event", "batch", "sync"))
_INT_ONLY = {int}
_LOWER = np.array([low for low, _ in FEATURE_RANGES], dtype=np.int64)
_UPPER = np.array([high for _, high in FEATURE_RANGES], dtype=np.int64)


def is_timestamp(value: Any) -> bool:
    """A canonical, timezone-aware ISO 8601 timestamp that is a real instant."""
    if type(value) is not str or _TIMESTAMP.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def fast_event(value: bytes | None) -> tuple[EventIds, list[int]] | None:
    """The event's ids and feature list when it is a canonical FeatureEvent, else None (validate fully).

    Accepts only a subset of what FeatureEvent accepts (canonical lowercase UUIDs, explicit ids and
    timestamps, plain int features); feature ranges are checked by the caller for the whole batch.
    """
    try:
        raw = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if type(raw) is not dict or not raw.keys() <= _EVENT_KEYS:
        return None
    event_id, customer, features = raw.get("event_id"), raw.get("customer_id"), raw.get("features")
    source, batch_id, version = raw.get("source", "event"), raw.get("batch_id"), raw.get("schema_version", 1)
    if (
        type(event_id) is not str
        or UUID_TEXT.fullmatch(event_id) is None
        or type(customer) is not str
        or CUSTOMER_ID.fullmatch(customer) is None
        or type(features) is not list
        or len(features) != FEATURE_COUNT
        or set(map(type, features)) != _INT_ONLY
        or type(source) is not str
        or source not in _SOURCES
        or type(version) is not int
        or version != 1
        or (batch_id is not None and (type(batch_id) is not str or UUID_TEXT.fullmatch(batch_id) is None))
        or not is_timestamp(raw.get("occurred_at"))
    ):
        return None
    return EventIds(event_id, customer, source, batch_id), features


def _in_range(rows: list[list[int]]) -> list[bool]:
    """Per row, whether every feature is within its documented range (one vectorised check)."""
    if not rows:
        return []
    try:
        matrix = np.array(rows, dtype=np.int64)
    except OverflowError:  # an int beyond int64 somewhere: let the full validation name it
        return [False] * len(rows)
    inside = np.all((matrix >= _LOWER) & (matrix <= _UPPER), axis=1)
    return [bool(flag) for flag in inside.tolist()]


def decode_records(
    records: Sequence[SourceRecord],
) -> tuple[list[tuple[SourceRecord, EventIds]], np.ndarray, list[tuple[bytes | None, DeadLetter]]]:
    """Validate records as FeatureEvents: (valid records with ids, their (n, 86) features, dead letters).

    Canonical events take a cheap path (orjson plus exact checks); any other record is validated by
    FeatureEvent itself, so acceptance, defaults and dead-letter reasons are exactly the contract's.
    """
    fast = [fast_event(record.value) for record in records]
    in_range = iter(_in_range([item[1] for item in fast if item is not None]))
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
            stage: Stage = (
                "decode" if any(e["type"] == "json_invalid" for e in error.errors()) else "validation"
            )
            dead.append((record.key, dead_letter(record, stage, validation_reason(error))))
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


def prediction_payload(event: EventIds, fields: dict[str, Any], scored_at: str) -> bytes:
    """A Prediction message (schemas.messages.Prediction) as JSON bytes."""
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_id": event.event_id,
            "customer_id": event.customer_id,
            "model_version": fields["model_version"],
            "recommendations": fields["recommendations"],
            "propensity": fields["propensity"],
            "segment": fields["segment"],
            "scored_at": scored_at,
            "source": event.source,
            "batch_id": event.batch_id,
        }
    )


def assemble(valid: Sequence[tuple[SourceRecord, EventIds]], rows: Sequence[dict[str, Any] | str]) -> Scored:
    """Pair each event with its scored row: a prediction payload, or a dead letter with the reason."""
    scored = Scored()
    scored_at = datetime.now(UTC).isoformat()
    for (record, event), row in zip(valid, rows, strict=True):
        if isinstance(row, str):
            scored.dead_letters.append((record.key, dead_letter(record, "inference", row, event)))
        else:
            scored.predictions.append((event.customer_id.encode(), prediction_payload(event, row, scored_at)))
    return scored

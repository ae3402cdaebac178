"""Wire codecs of the contracts: fast JSON encoders and validators, dead-letter building, the stage rule.

Every fast path here accepts a subset of what its pydantic model accepts and writes exactly what it
writes; anything else falls back to the model itself (tests/schemas prove both with hypothesis).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeGuard
from uuid import UUID, uuid4

import numpy as np
import orjson
from pydantic import ValidationError

from schemas.features import FEATURE_COUNT, FEATURE_LOWER, FEATURE_UPPER
from schemas.messages import (
    CUSTOMER_ID_PATTERN,
    DEAD_LETTER_PAYLOAD_MAX,
    SCHEMA_VERSION,
    SOURCES,
    DeadLetter,
    FeatureEvent,
    Stage,
)

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
_EVENT_KEYS = frozenset(FeatureEvent.model_fields)
_INT_ONLY = {int}
_LOWER = np.array(FEATURE_LOWER, dtype=np.int64)
_UPPER = np.array(FEATURE_UPPER, dtype=np.int64)
REASON_MAX = 2000
"""Longest dead-letter reason kept (characters)."""


class SourceRecord(Protocol):
    """The parts of a consumed Kafka record the consumers need (aiokafka ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


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


def validation_reason(error: ValidationError) -> str:
    """Compact `field: message` list of a pydantic error, naming each bad field."""
    parts = []
    for item in error.errors(include_url=False)[:5]:
        location = ".".join(str(part) for part in item["loc"]) or "message"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def error_stage(error: ValidationError) -> Stage:
    """`decode` when the bytes are not JSON at all, else `validation`."""
    return "decode" if any(e["type"] == "json_invalid" for e in error.errors()) else "validation"


def _uuid_or_none(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value is not None else None
    except ValueError:
        return None


def bounded_payload(value: bytes) -> dict[str, Any]:
    """The dead-letter payload fields of a value: at most DEAD_LETTER_PAYLOAD_MAX bytes, UTF-8 or base64."""
    cut = value[:DEAD_LETTER_PAYLOAD_MAX]
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(cut).decode("ascii"), "base64"
    else:  # a valid UTF-8 value can only be split inside its last character
        text, encoding = cut.decode("utf-8", errors="ignore"), "utf-8"
    return {
        "payload": text,
        "payload_encoding": encoding,
        "payload_size": len(value),
        "payload_sha256": hashlib.sha256(value).hexdigest(),
        "payload_truncated": len(cut) < len(value),
    }


def dead_letter(record: SourceRecord, stage: Stage, reason: str, event: EventIds | None = None) -> DeadLetter:
    """A dead letter for a record, with whatever ids can be recovered from it and a bounded payload.

    The single owner of dead-letter building: the payload is cut to DEAD_LETTER_PAYLOAD_MAX bytes (size and
    SHA-256 of the original kept) so a letter always fits the producer's request limit.
    """
    value = record.value or b""
    if event is not None:
        ids: dict[str, Any] = {
            "event_id": UUID(event.event_id),
            "customer_id": event.customer_id,
            "batch_id": UUID(event.batch_id) if event.batch_id else None,
        }
    else:
        try:
            raw = orjson.loads(value)
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
        **bounded_payload(value),
        reason=reason[:REASON_MAX],
        stage=stage,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        **ids,
    )


def is_timestamp(value: Any) -> bool:
    """A canonical, timezone-aware ISO 8601 timestamp that is a real instant."""
    if type(value) is not str or _TIMESTAMP.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def is_uuid_text(value: Any) -> TypeGuard[str]:
    """A canonical lowercase UUID string."""
    return type(value) is str and UUID_TEXT.fullmatch(value) is not None


def fast_event(value: bytes | None) -> tuple[EventIds, list[int]] | None:
    """The event's ids and feature list when it is a canonical FeatureEvent, else None (validate fully).

    Accepts only a subset of what FeatureEvent accepts (canonical lowercase UUIDs, explicit ids and
    timestamps, plain int features); feature ranges are checked by `rows_in_range` for the whole batch.
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
        not is_uuid_text(event_id)
        or type(customer) is not str
        or CUSTOMER_ID.fullmatch(customer) is None
        or type(features) is not list
        or len(features) != FEATURE_COUNT
        or set(map(type, features)) != _INT_ONLY
        or type(source) is not str
        or source not in SOURCES
        or type(version) is not int
        or version != SCHEMA_VERSION
        or (batch_id is not None and not is_uuid_text(batch_id))
        or not is_timestamp(raw.get("occurred_at"))
    ):
        return None
    return EventIds(event_id, customer, source, batch_id), features


def rows_in_range(rows: list[list[int]]) -> list[bool]:
    """Per row, whether every feature is within its documented range (one vectorised check)."""
    if not rows:
        return []
    try:
        matrix = np.array(rows, dtype=np.int64)
    except OverflowError:  # an int beyond int64 somewhere: let the full validation name it
        return [False] * len(rows)
    inside = np.all((matrix >= _LOWER) & (matrix <= _UPPER), axis=1)
    return [bool(flag) for flag in inside.tolist()]


def feature_event_json(
    event_id: UUID | str,
    customer_id: str,
    features: Iterable[int],
    occurred_at: datetime | str,
    source: str,
    batch_id: UUID | str | None = None,
) -> bytes:
    """A FeatureEvent serialised with orjson (same JSON as the pydantic contract, several times faster)."""
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION,
        "event_id": str(event_id),
        "customer_id": customer_id,
        "features": features if isinstance(features, list) else list(features),
        "occurred_at": occurred_at if isinstance(occurred_at, str) else occurred_at.isoformat(),
        "source": source,
        "batch_id": None if batch_id is None else str(batch_id),
    })


class BatchRowEncoder:
    """FeatureEvent JSON for CSV rows, built by string assembly from already-validated parts."""

    def __init__(self, batch_id: UUID, occurred_at: datetime) -> None:
        self._tail = (f'],"occurred_at":"{occurred_at.isoformat()}","source":"batch",'
                      f'"batch_id":"{batch_id}","schema_version":{SCHEMA_VERSION}}}')

    def encode(self, customer_id: str, features_csv: str) -> bytes:
        """One event; customer_id matched the CustomerId pattern and features_csv holds 86 checked ints."""
        # Neither part can contain a character JSON would escape, so plain assembly is valid JSON.
        return (f'{{"event_id":"{uuid4()}","customer_id":"{customer_id}","features":[{features_csv}'
                f"{self._tail}").encode()


def prediction_json(event: EventIds, fields: dict[str, Any], scored_at: datetime) -> bytes:
    """A Prediction message as JSON bytes, exactly as `Prediction.model_dump_json()` writes it.

    `fields` holds an engine record (model_version, recommendations, propensity, segment), whose ranges
    the caller has checked; timestamps end in `Z`, as pydantic writes UTC.
    """
    return orjson.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "event_id": event.event_id,
            "customer_id": event.customer_id,
            "model_version": fields["model_version"],
            "recommendations": fields["recommendations"],
            "propensity": fields["propensity"],
            "segment": fields["segment"],
            "scored_at": scored_at,
            "source": event.source,
            "batch_id": event.batch_id,
        },
        option=orjson.OPT_UTC_Z,
    )


def utc_now() -> datetime:
    """The timestamp a prediction is stamped with."""
    return datetime.now(UTC)

"""Kafka message contracts: feature events, predictions and dead-letter records (schema version 1)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, get_args
from uuid import UUID, uuid4

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from schemas.feature_log import check_packed
from schemas.features import FeatureVector

SCHEMA_VERSION: Literal[1] = 1
"""Bumped only for breaking changes; additive fields keep the version (see docs/consumers.md)."""

CUSTOMER_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
"""A customer id, unanchored: every layer that checks ids (API, CSV, scorer, sink) compiles this one."""

CustomerId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=f"^{CUSTOMER_ID_PATTERN}$"),
]
"""1–64 characters of letters, digits, `_ . @ -`, starting with a letter or digit (safe inside Redis keys)."""

Source = Literal["event", "batch", "sync"]
SOURCES: frozenset[str] = frozenset(get_args(Source))
Stage = Literal["decode", "validation", "inference", "publish"]
SegmentLabel = Literal["high", "medium", "low"]


def utc_now() -> datetime:
    """Timezone-aware current time in UTC."""
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every message: frozen, unknown fields rejected, schema version stamped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Message schema version.")


class FeatureEvent(Contract):
    """A customer's 86 feature values, published on `customer-features.v1` or `batch-rows.v1`."""

    event_id: UUID = Field(default_factory=uuid4, description="Unique id; the sink deduplicates on it.")
    customer_id: CustomerId
    features: FeatureVector
    occurred_at: datetime = Field(default_factory=utc_now)
    source: Source = "event"
    batch_id: UUID | None = Field(default=None, description="Set when the row came from a CSV batch.")


class Recommendation(BaseModel):
    """One recommended product with its calibrated purchase probability."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    product_id: str
    name: str
    probability: float = Field(ge=0.0, le=1.0)


class Segment(BaseModel):
    """Value segment: label and 0–100 percentile score of the predicted annual premium."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: SegmentLabel
    score: float = Field(ge=0.0, le=100.0)


DEAD_LETTER_PAYLOAD_MAX = 64 * 1024
"""Most bytes of the original value a dead letter carries (before base64); see docs/operations.md."""


class Reason(BaseModel):
    """One feature's push on a score: its model contribution (TreeSHAP or linear term) for this customer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature: str = Field(description="Column name, e.g. PPERSAUT.")
    meaning: str = Field(description="What the column means (columns.csv).")
    value: int = Field(description="The customer's value of the feature.")
    contribution: float = Field(description="Push on the score (propensity: log-odds; segment: value units).")


class Prediction(Contract):
    """A scored event, published on `predictions.v1` keyed by customer_id (the public contract)."""

    event_id: UUID
    customer_id: CustomerId
    model_version: str
    recommendations: Annotated[list[Recommendation], Field(min_length=3, max_length=3)]
    propensity: float = Field(ge=0.0, le=1.0, description="Probability of buying a caravan policy.")
    segment: Segment
    scored_at: datetime
    source: Source
    batch_id: UUID | None = None
    reasons: (
        dict[Literal["propensity_up", "propensity_down", "segment_up", "segment_down"], list[Reason]] | None
    ) = Field(default=None, description="Optional: up to 3 features pushing each score up, and down.")
    features_packed: Annotated[str, AfterValidator(check_packed)] | None = Field(
        default=None,
        description="Optional: the 86 feature values the prediction was scored on, one character each in "
        "columns.csv order: value = code point - 48 (`0`-`9` are 0-9, `:` is 10, ... `Y` is 41).",
    )


class DeadLetter(Contract):
    """A record that could not be processed, with why and where it came from (`dead-letter.v1`)."""

    payload: str = Field(
        description="The original message value as text (`payload_encoding`), cut to DEAD_LETTER_PAYLOAD_MAX "
        "bytes when longer (`payload_truncated`)."
    )
    reason: str
    stage: Stage
    topic: str
    partition: int
    offset: int
    event_id: UUID | None = None
    customer_id: str | None = None
    batch_id: UUID | None = None
    failed_at: datetime = Field(default_factory=utc_now)
    payload_encoding: Literal["utf-8", "base64"] | None = Field(
        default=None, description="`base64` when the value was not UTF-8; absent (UTF-8) in older letters."
    )
    payload_size: int | None = Field(default=None, ge=0, description="Size of the original value in bytes.")
    payload_sha256: str | None = Field(default=None, description="Hex SHA-256 of the original value.")
    payload_truncated: bool | None = Field(default=None, description="True when `payload` is a prefix only.")
    redrive_count: int = Field(
        default=0, ge=0, description="Times the record was redriven before it failed (its "
        "`streamscore-redrive-count` header); 0 for a first failure."
    )

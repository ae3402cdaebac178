"""SQLAlchemy 2 table mappings: the system of record shared by the sink and the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base; Alembic migrations are written against this metadata."""


IDENTIFIER = String(64, collation="C")
"""The type of customer and model-version ids: compared bytewise (migration 0006 says why)."""


class ScoredColumns:
    """The columns a stored prediction and a shadow prediction share (one definition of their shape)."""

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(IDENTIFIER, nullable=False)
    model_version: Mapped[str] = mapped_column(IDENTIFIER, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    batch_id: Mapped[UUID | None] = mapped_column(PG_UUID(as_uuid=True), nullable=True)
    recommendations: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    propensity: Mapped[float] = mapped_column(Float, nullable=False)
    segment_label: Mapped[str] = mapped_column(String(8), nullable=False)
    segment_score: Mapped[float] = mapped_column(Float, nullable=False)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    stored_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Prediction(ScoredColumns, Base):
    """Every stored prediction, exactly one row per event_id."""

    __tablename__ = "predictions"

    event_id: Mapped[UUID] = mapped_column(PG_UUID(as_uuid=True), unique=True, nullable=False)
    reasons: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)  # Prediction.reasons
    features: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # the feature log (86 bytes)
    # W3C trace id (32 hex) of a sampled prediction's trace; NULL when it was not traced (infra/tracing.py).
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (
        Index("ix_predictions_customer_scored", "customer_id", "scored_at"),
        Index("ix_predictions_batch", "batch_id", "id", postgresql_where="batch_id IS NOT NULL"),
        Index("ix_predictions_scored_brin", "scored_at", postgresql_using="brin"),  # replay windows
    )


class ShadowPrediction(ScoredColumns, Base):
    """A shadow model version's prediction of an event: compared with the served one, never served."""

    __tablename__ = "predictions_shadow"

    event_id: Mapped[UUID] = mapped_column(PG_UUID(as_uuid=True), nullable=False)

    __table_args__ = (
        UniqueConstraint("event_id", "model_version", name="uq_predictions_shadow_event_version"),
        Index("ix_predictions_shadow_version_id", "model_version", "id"),
        Index("ix_predictions_shadow_customer_scored", "customer_id", "scored_at"),
    )


class OutcomeRecord(Base):
    """A reported purchase (`outcomes.v1`), stored once per outcome_id; joined to predictions when read."""

    __tablename__ = "outcomes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    outcome_id: Mapped[str] = mapped_column(IDENTIFIER, nullable=False)
    customer_id: Mapped[str] = mapped_column(IDENTIFIER, nullable=False)
    product_id: Mapped[str] = mapped_column(String(32, collation="C"), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    stored_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        UniqueConstraint("outcome_id", name="uq_outcomes_outcome_id"),
        Index("ix_outcomes_customer_product", "customer_id", "product_id", "occurred_at"),
        Index("ix_outcomes_occurred", "occurred_at"),
    )


class Segment(Base):
    """A customer's current value segment under one model version."""

    __tablename__ = "segments"

    customer_id: Mapped[str] = mapped_column(IDENTIFIER, primary_key=True)
    model_version: Mapped[str] = mapped_column(IDENTIFIER, primary_key=True)
    label: Mapped[str] = mapped_column(String(8), nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        Index("ix_segments_model_label", "model_version", "label"),
        {"postgresql_with": {"fillfactor": 70}},  # room for heap-only updates (migration 0006)
    )


class CacheRepair(Base):
    """A Redis key the sink could not write: the durable record the cache is repaired from."""

    __tablename__ = "cache_repair"

    customer_id: Mapped[str] = mapped_column(IDENTIFIER, primary_key=True)
    model_version: Mapped[str] = mapped_column(IDENTIFIER, primary_key=True)
    noted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class BatchJob(Base):
    """One uploaded CSV batch and its progress through the pipeline."""

    __tablename__ = "batch_jobs"

    task_id: Mapped[UUID] = mapped_column(PG_UUID(as_uuid=True), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # a schemas.jobs.JobStatus word
    filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    rows_total: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rows_valid: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rows_invalid: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rows_scored: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rows_dead: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    published: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, server_default="[]")
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_batch_jobs_created", "created_at"),)


class DeadLetterRecord(Base):
    """A dead-lettered record, stored once per origin (topic, partition, offset)."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source_topic: Mapped[str] = mapped_column(String(255), nullable=False)
    source_partition: Mapped[int] = mapped_column(Integer, nullable=False)
    source_offset: Mapped[int] = mapped_column(BigInteger, nullable=False)
    stage: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    event_id: Mapped[UUID | None] = mapped_column(PG_UUID(as_uuid=True), nullable=True)
    customer_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    batch_id: Mapped[UUID | None] = mapped_column(PG_UUID(as_uuid=True), nullable=True)
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    payload_encoding: Mapped[str | None] = mapped_column(String(8), nullable=True)
    payload_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    payload_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payload_truncated: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    source_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    redrive_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # one of DEAD_LETTER_STATUSES
    status: Mapped[str] = mapped_column(String(12), nullable=False, server_default="open")

    __table_args__ = (
        UniqueConstraint("source_topic", "source_partition", "source_offset", name="uq_dead_letters_origin"),
        Index("ix_dead_letters_batch", "batch_id", postgresql_where="batch_id IS NOT NULL"),
        Index("ix_dead_letters_failed_at", "failed_at"),
    )


DEAD_LETTER_STATUSES = ("open", "redriven", "quarantined")
"""open: may be redriven; redriven: sent back to its origin topic; quarantined: failed too often."""


class DeadLetterRedrive(Base):
    """One redrive decision on a dead letter: who, when, with which count, and what became of it."""

    __tablename__ = "dead_letter_redrives"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    dead_letter_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("dead_letters.id", ondelete="CASCADE"), nullable=False
    )
    outcome: Mapped[str] = mapped_column(String(12), nullable=False)  # redriven|quarantined
    redrive_count: Mapped[int] = mapped_column(Integer, nullable=False)
    redriven_by: Mapped[str] = mapped_column(String(128), nullable=False)
    redriven_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    target_topic: Mapped[str] = mapped_column(String(255), nullable=False)
    target_partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    target_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_dead_letter_redrives_letter", "dead_letter_id"),)


class User(Base):
    """A person who signs in with the OAuth2 password flow."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # admin|client|reader
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class ApiKey(Base):
    """A machine client's key, stored only as a hash."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)), nullable=False)
    revoked: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Replay(Base):
    """One replay of a window of logged features through a model version, and its agreement figures."""

    __tablename__ = "replays"

    id: Mapped[UUID] = mapped_column(PG_UUID(as_uuid=True), primary_key=True)
    model_version: Mapped[str] = mapped_column(IDENTIFIER, nullable=False)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # running|completed|failed
    rows: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    exact_agreement: Mapped[float | None] = mapped_column(Float, nullable=True)  # every served field equal
    top3_agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    top3_set_agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    propensity_spearman: Mapped[float | None] = mapped_column(Float, nullable=True)
    segment_agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    served_versions: Mapped[dict[str, int] | None] = mapped_column(JSONB, nullable=True)
    outcomes: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)  # served vs replayed
    requested_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_replays_version_finished", "model_version", "finished_at"),)


class PredictionChunk(Base):
    """The outcome join's pre-aggregate: one table's, version's and UTC day's window columns, packed
    (store/prediction_chunks.py)."""

    __tablename__ = "prediction_chunks"

    tbl: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    model_version: Mapped[str] = mapped_column(IDENTIFIER, primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    keys: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    propensity: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    scored: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class PredictionChunkWatermark(Base):
    """Per table, the id up to which every prediction is in its chunk."""

    __tablename__ = "prediction_chunk_watermarks"

    tbl: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, nullable=False)


class OutcomeLink(Base):
    """The outcome join's pre-aggregate: one (outcome, prediction) pair the link rule joins under a horizon
    (store/outcome_links.py)."""

    __tablename__ = "outcome_links"

    horizon_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    oid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tbl: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model_version: Mapped[str] = mapped_column(IDENTIFIER, nullable=False)
    product_id: Mapped[str] = mapped_column(String(32, collation="C"), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    hit: Mapped[bool] = mapped_column(Boolean, nullable=False)


class OutcomeLinkWatermark(Base):
    """Per horizon, the outcome and prediction ids up to which every link is packed."""

    __tablename__ = "outcome_link_watermarks"

    horizon_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    last_outcome: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last0: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last1: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ReplayPrediction(ScoredColumns, Base):
    """A replayed prediction: a logged event re-scored by a replay's version; never served."""

    __tablename__ = "predictions_replay"

    replay_id: Mapped[UUID] = mapped_column(
        PG_UUID(as_uuid=True), ForeignKey("replays.id", ondelete="CASCADE"), nullable=False
    )
    event_id: Mapped[UUID] = mapped_column(PG_UUID(as_uuid=True), nullable=False)

    __table_args__ = (Index("ix_predictions_replay_replay_event", "replay_id", "event_id"),)

"""Request and response shapes of the REST API (message contracts stay in `schemas/`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.features import FEATURE_COUNT, FeatureVector
from schemas.jobs import JobStatus
from schemas.messages import CustomerId, Reason, SegmentLabel

_EXAMPLE_FEATURES: list[int] = [
    33, 1, 3, 2, 8, 0, 5, 1, 3, 7, 0, 2, 1, 2, 6, 1, 2, 7, 1, 0, 1, 2, 5, 2, 1, 1, 2, 6, 1, 1, 8, 8, 0, 1,
    8, 1, 0, 4, 5, 0, 0, 4, 3, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
]
assert len(_EXAMPLE_FEATURES) == FEATURE_COUNT
_EXAMPLE: Any = {"customer_id": "c-1001", "features": _EXAMPLE_FEATURES}


class ApiModel(BaseModel):
    """Base of request bodies: unknown fields are rejected so typos surface as 422."""

    model_config = ConfigDict(extra="forbid")


class EventIn(ApiModel):
    """One feature event as clients send it; the server fills event_id/occurred_at and sets source."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [_EXAMPLE]},
    )

    schema_version: Literal[1] = 1
    event_id: UUID | None = Field(
        default=None, description="Give one to make retries idempotent (the sink stores each id once)."
    )
    customer_id: CustomerId
    features: FeatureVector
    occurred_at: datetime | None = Field(default=None, description="Defaults to the time of receipt.")
    source: Literal["event"] | None = Field(default=None, description="Always `event` on this route.")


class EventsAccepted(BaseModel):
    """Every event was acknowledged by the broker."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"accepted": 1, "event_ids": ["6f1c1d5e-8f0a-4a53-9a51-3c1f0f1f2b7e"]}]})

    accepted: int = Field(examples=[1])
    event_ids: list[UUID] = Field(description="Ids of the accepted events, in request order.")


class ScoreRequest(ApiModel):
    """A customer's features to score now; without features, the latest stored prediction is returned."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [_EXAMPLE]},
    )

    customer_id: CustomerId
    features: FeatureVector | None = None


class SegmentRequest(ApiModel):
    """A customer's features to place in a value segment."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [_EXAMPLE]},
    )

    customer_id: CustomerId
    features: FeatureVector


class SegmentOut(BaseModel):
    """The customer's value segment under the active model."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"customer_id": "c-1001", "label": "medium", "score": 57.4, "model_version": "v20261122-101131"}]})

    customer_id: str
    label: SegmentLabel
    score: float = Field(ge=0.0, le=100.0, description="0–100 percentile of the predicted annual premium.")
    model_version: str
    reasons: dict[Literal["up", "down"], list[Reason]] | None = Field(
        default=None, description="Up to 3 features pushing the value score up, and down, strongest first."
    )


class BatchAccepted(BaseModel):
    """The CSV was parsed and its valid rows published; scoring continues asynchronously."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"task_id": "0d4c7a52-5d0e-4a8f-a2b4-0f6f3c2f8e11", "status": "processing", "rows": 19998,
         "rows_invalid": 2}]})

    task_id: UUID
    status: JobStatus
    rows: int = Field(description="Valid rows accepted and published.")
    rows_invalid: int = Field(default=0, description="Rows rejected; see the task's `errors`.")


class RowError(BaseModel):
    """Why one CSV row was rejected (line 1 is the header)."""

    line: int
    reason: str


class BatchStatus(BaseModel):
    """Progress of one CSV batch through the pipeline."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "task_id": "0d4c7a52-5d0e-4a8f-a2b4-0f6f3c2f8e11", "status": "completed", "filename": "march.csv",
        "rows_total": 20000, "rows_valid": 19998, "rows_scored": 19998, "rows_failed": 2,
        "errors": [{"line": 7, "reason": "MGEMLEEF must be 1–6; got 9"}], "failure_reason": None,
        "created_at": "2026-11-22T10:00:00Z", "finished_at": "2026-11-22T10:00:02Z"}]})

    task_id: UUID
    status: JobStatus
    filename: str | None = None
    rows_total: int = Field(description="Data rows in the file.")
    rows_valid: int
    rows_scored: int
    rows_failed: int = Field(description="Rows rejected at upload plus rows dead-lettered later.")
    errors: list[RowError] = Field(description="The first row errors (up to the configured number).")
    failure_reason: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class ModelVersions(BaseModel):
    """Versions in the registry and the one in use."""

    active: str
    serving: str = Field(description="The version this API process scores with right now.")
    versions: list[str]


class ModelMetrics(BaseModel):
    """Validation metrics of a model version, from its manifest."""

    model_version: str
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    auc: float | None = None
    top20_buyers: float | None = Field(default=None, description="Buyers found in the top-scored 20 %.")
    top20_recall: float | None = Field(default=None, description="Share of buyers in the top-scored 20 %.")
    hr_at_3: float | None = Field(default=None, description="Recommender HR@3 with one owned product hidden.")
    spearman: float | None = Field(default=None, description="Value score vs actual premium (rank corr.).")
    details: dict[str, Any] = Field(default_factory=dict, description="The manifest's full metrics block.")


class ModelActivated(BaseModel):
    """The version now active in this process (others follow via the registry pointer)."""

    active: str
    previous: str


class Liveness(BaseModel):
    """The process is up."""

    status: Literal["ok"] = "ok"


class DependencyStatus(BaseModel):
    """Reachability of one dependency."""

    ok: bool
    latency_ms: float | None = None
    error: str | None = None


class Readiness(BaseModel):
    """Whether the broker, database and Redis all answer."""

    status: Literal["ready", "unavailable"]
    model_version: str | None = None
    dependencies: dict[str, DependencyStatus]

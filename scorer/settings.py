"""Settings of the scorer service (environment variables with prefix STREAMSCORE_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from infra.settings import ConsumerSettings


class ScorerSettings(ConsumerSettings):
    """Everything one scorer process needs; built once in run() or by the caller of build_app()."""

    model_config = SettingsConfigDict(env_prefix="STREAMSCORE_", extra="ignore", protected_namespaces=())

    batch_max_records: int = Field(
        default=4000, ge=1, description="Largest micro-batch (<= the engine's 4096-row chunk: one call)."
    )
    batch_timeout_ms: int = Field(default=20, ge=0, description="Longest wait for a micro-batch to fill.")
    model_registry: str | None = Field(default=None, description="Registry dir; default: the packaged one.")
    model_refresh_seconds: float = Field(default=5.0, gt=0, description="Hot-swap poll interval.")
    redis_url: str | None = Field(default=None, description="Dashboard stats go here when set.")
    retry_initial_seconds: float = Field(default=0.2, gt=0, description="First publish retry delay.")
    retry_max_seconds: float = Field(default=5.0, gt=0, description="Cap of the doubling retry delay.")
    retry_window_seconds: float = Field(
        default=30.0, gt=0, description="Retry a transient publish failure this long, then rewind the batch."
    )
    reasons: bool = Field(
        default=False,
        description="Add reason codes to streamed predictions (TreeSHAP: costlier than scoring; see docs).",
    )
    feature_log: bool = Field(
        default=True,
        description="Carry each prediction's 86 feature values (`features_packed`) for the feature log.",
    )
    shadow_scoring: bool = Field(
        default=True, description="Also score with the registry's shadow version, when one is set."
    )
    processing_guarantee: Literal["at-least-once", "exactly-once"] = Field(
        default="at-least-once",
        description="exactly-once: each input partition's predictions, shadow predictions, dead letters "
        "and offsets commit in one Kafka transaction (needs a broker with transactions; read_committed).",
    )
    checkpoint_interval_ms: int = Field(
        default=50, ge=1,
        description="exactly-once: how often the open transactions commit (adds up to this to the latency).",
    )

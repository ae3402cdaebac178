"""Settings of the sink service (environment variables with prefix STREAMSCORE_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from infra.settings import ConsumerSettings, DatabaseSettings, RedisSettings


class SinkSettings(ConsumerSettings, DatabaseSettings, RedisSettings):
    """Everything one sink process needs; built once in run() or by the caller of build_app()."""

    model_config = SettingsConfigDict(env_prefix="STREAMSCORE_", extra="ignore")

    batch_max_records: int = Field(default=5000, ge=1, description="Largest batch in one transaction.")
    batch_timeout_ms: int = Field(
        default=20, ge=0, description="Longest wait when nothing is buffered (an empty poll waits twice)."
    )
    fetch_partition_max_bytes: int = Field(
        default=262_144, ge=1024,
        # With aiokafka's 1 MiB per partition, a lagging sink buffered ~25 MB more records than a caught-up
        # one (RSS +23 % over 1M events); 256 KiB bounds it with throughput unchanged (bench_pipeline).
        description="Most bytes fetched ahead per partition (a larger record is still fetched whole).",
    )
    retry_initial_seconds: float = Field(default=0.1, gt=0, description="First Postgres retry delay.")
    retry_max_seconds: float = Field(default=5.0, gt=0, description="Cap of the doubling retry delay.")
    retry_window_seconds: float = Field(
        default=30.0, gt=0, description="Retry in the handler this long, then rewind and re-poll the batch."
    )
    redis_timeout_seconds: float = Field(default=0.5, gt=0, description="Cache writes give up after this.")
    cache_repair_interval_seconds: float = Field(
        default=0.5, gt=0, description="How often noted cache keys are repaired from Postgres."
    )

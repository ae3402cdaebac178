"""Settings shared by every service; each service subclasses with its own fields (prefix STREAMSCORE_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.kafka_connection import check_security, parse_bootstrap
from infra.stats import instance_id


class KafkaSettings(BaseSettings):
    """Broker connection and topic layout."""

    model_config = SettingsConfigDict(env_prefix="STREAMSCORE_", extra="ignore")

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers: host:port[,host:port…]."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="Required with SASL_SSL and SASL_PLAINTEXT."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = Field(default=None, description="Never logged.")
    kafka_ssl_cafile: str | None = Field(
        default=None, description="PEM of the CA that signed the brokers' certificates (default: system CAs)."
    )
    kafka_ssl_certfile: str | None = Field(default=None, description="Client certificate (PEM): mutual TLS.")
    kafka_ssl_keyfile: str | None = Field(default=None, description="Its private key (PEM).")
    kafka_partitions: int = Field(default=6, ge=1, description="Partitions for topics created at start-up.")
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_idempotent: bool = Field(
        default=True,
        description="Idempotent producer (acks=all either way). Tansu lacks InitProducerId, so the "
        "embedded broker turns this off.",
    )
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="none",
        description="Producer compression. Off: on a local broker it costs more CPU than it saves "
        "(zstd, lz4 and snappy need the `compression` extra).",
    )
    topic_prefix: str = Field(
        default="", description="Prepended to every topic name (tests isolate with it)."
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_list(cls, value: str) -> str:
        parse_bootstrap(value)
        return value

    @model_validator(mode="after")
    def _security(self) -> KafkaSettings:
        check_security(self)
        return self


class DatabaseSettings(BaseSettings):
    """Postgres connection."""

    model_config = SettingsConfigDict(env_prefix="STREAMSCORE_", extra="ignore")

    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/streamscore",
        description="SQLAlchemy async URL (postgresql+asyncpg://…).",
    )
    database_pool_size: int = Field(default=10, ge=1)


class RedisSettings(BaseSettings):
    """Redis connection."""

    model_config = SettingsConfigDict(env_prefix="STREAMSCORE_", extra="ignore")

    redis_url: str = Field(default="redis://127.0.0.1:6379/0")
    redis_ttl_seconds: int = Field(default=86_400, ge=1)
    redis_timeout_seconds: float = Field(
        default=0.05, gt=0, description="Every Redis call gives up after this (reads fall back to Postgres)."
    )
    redis_pause_seconds: float = Field(
        default=1.0, gt=0, description="After a failed Redis call, skip Redis this long."
    )


class ConsumerSettings(KafkaSettings):
    """What every batch consumer (scorer, sink) sets; each service overrides the defaults it tunes."""

    batch_max_records: int = Field(default=4000, ge=1, description="Largest batch handled in one call.")
    batch_timeout_ms: int = Field(default=20, ge=0, description="Longest wait for a batch to fill.")
    fetch_max_wait_ms: int = Field(
        default=50, ge=0,
        # The broker answers a fetch as soon as records arrive, so a longer wait only means fewer empty
        # fetches: at 10 ms an idle scorer, sink and Tansu used 8 + 10 + 26 % of a core, at 50 ms
        # 4 + 5 + 10 %, and p99 sent -> stored at 2,000 events/s fell from 201-218 to 146-150 ms. Tansu
        # answers later than the data from a 100 ms wait up (p50 14 ms late at 100, 48 ms at 200).
        description="Broker-side fetch wait (a fetch returns as soon as records arrive).",
    )
    fetch_partition_max_bytes: int = Field(
        default=1_048_576, ge=1024,
        description="Most bytes fetched ahead per partition (a larger record is still fetched whole).",
    )
    pipeline_depth: int = Field(
        default=2, ge=1, description="Batches handled before the oldest has settled (1: none overlap)."
    )
    settle_timeout_seconds: float = Field(
        default=20.0, gt=0,
        description="Longest wait for one offset commit, and for handled batches to settle when partitions "
        "are revoked or the consumer stops; past it they stay uncommitted and are replayed.",
    )
    metrics_port: int = Field(default=0, ge=0, description="Prometheus port; 0 disables.")
    stats_interval_seconds: float = Field(default=1.0, gt=0)
    instance_id: str = Field(default_factory=instance_id)
    log_level: str = "INFO"

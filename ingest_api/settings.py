"""Settings of the ingest/scoring API (environment variables with prefix STREAMSCORE_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from infra.settings import DatabaseSettings, KafkaSettings, RedisSettings
from schemas.redrive import REDRIVE_MAX_DEFAULT


class ApiSettings(KafkaSettings, DatabaseSettings, RedisSettings):
    """Everything the API process needs; one instance per process, built in the lifespan."""

    model_config = SettingsConfigDict(env_prefix="STREAMSCORE_", extra="ignore")

    api_workers: int = Field(
        default=1, ge=1, description="API processes sharing host:port (SO_REUSEPORT); `--workers` wins."
    )
    dev_mode: bool = Field(
        default=False, description="Embedded dev mode: a missing JWT secret is generated (and said so)."
    )
    jwt_secret: str | None = Field(default=None, description="HS256 secret, at least 32 bytes.")
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_private_key: str | None = Field(default=None, description="PEM private key when RS256.")
    jwt_public_key: str | None = Field(default=None, description="PEM public key when RS256.")
    jwt_issuer: str = "streamscore"
    jwt_audience: str = "streamscore-api"
    jwt_ttl_seconds: int = Field(default=3600, ge=60)
    jwt_max_age_seconds: int = Field(
        default=86_400, ge=60, description="Oldest token accepted (now − iat), whatever its exp says."
    )
    rate_limit: int = Field(
        default=60_000, ge=0, description="Requests per minute per principal; 0 disables."
    )
    login_per_address_per_minute: int = Field(
        default=30, ge=1, description="Sign-in attempts per client address per minute (before hashing)."
    )
    login_global_per_minute: int = Field(
        default=180, ge=1,
        description="Passwords hashed per minute for the whole process; attempts refused before hashing "
        "are not counted, and `login_recent_share` of it is kept for recent users.",
    )
    login_recent_share: float = Field(
        default=0.34, ge=0.0, le=1.0,
        description="Share of the process-wide sign-in budget only users who signed in recently from "
        "the same address may use.",
    )
    login_recent_s: float = Field(
        default=7 * 86_400, ge=0.0, description="How long a sign-in counts as recent (per user and address)."
    )
    login_failures_per_minute: int = Field(
        default=20, ge=1, description="Wrong passwords per (username, client address) per minute."
    )
    login_hash_workers: int = Field(default=1, ge=1, description="Threads that run argon2 for sign-in.")
    login_hash_queue: int = Field(default=4, ge=1, description="Sign-ins queued for argon2 before 429.")
    auth_outage_grace_s: float = Field(
        default=300.0, ge=0.0,
        description="Seconds a key or user verified before a database outage keeps working during it.",
    )
    max_header_bytes: int = Field(
        default=32 * 1024, ge=4096, description="Request line plus headers, in bytes; more gets 431."
    )
    head_timeout_s: float = Field(
        default=10.0, gt=0,
        description="Seconds for a request line and headers to arrive (from the connection's start or the "
        "previous response); else 408 and close.",
    )
    body_timeout_s: float = Field(
        default=10.0, gt=0, description="Window over which a request body must bring body_min_bytes_per_s."
    )
    body_min_bytes_per_s: int = Field(
        default=1024, ge=1, description="Slowest body upload, averaged over body_timeout_s; else 408."
    )
    max_connections: int = Field(
        default=4096, ge=16,
        description="Open client connections per process (lowered to fit the open-file limit); over it, "
        "the connection that waited longest for a head is closed.",
    )
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="Proxies whose X-Forwarded-For / X-Forwarded-Proto are trusted; none by default "
        "(the client address is the TCP peer).",
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token a Prometheus scraper sends to GET /metrics (or use an API "
        "key with scope `read`).",
    )
    metrics_cache_s: float = Field(default=1.0, ge=0.0, description="Seconds a /metrics rendering is reused.")
    public_kafka_bootstrap: str = Field(
        default="kafka.example:9092",
        description="Broker address published in /asyncapi `servers` (never the internal KAFKA_BOOTSTRAP).",
    )
    downloads_per_principal: int = Field(
        default=2, ge=1, description="Concurrent batch-results downloads per credential; more get 429."
    )
    downloads_per_process: int = Field(
        default=8, ge=1, description="Concurrent batch-results downloads per API process; more get 429."
    )
    dashboard_counts_ttl_s: float = Field(
        default=10.0, ge=0.0, description="Seconds the dashboard's segment counts are reused (a full scan)."
    )
    trace_url_template: str | None = Field(
        default=None, pattern=r"^https?://\S*\{trace_id\}\S*$",
        description="Trace viewer link of a stored prediction's trace id, e.g. "
        "`http://jaeger:16686/trace/{trace_id}` (the dashboard shows plain ids when unset).",
    )
    key_cache_ttl_s: float = Field(
        default=5.0, ge=0.0, description="Seconds a verified API key or user status is cached in-process."
    )
    max_score_json_bytes: int = Field(
        default=8 * 1024, ge=1024, description="Body limit of the scoring and sign-in routes (413)."
    )
    cors_origins: list[str] = Field(default_factory=list, description="CORS allow-list; none by default.")
    max_json_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(default=10_000, ge=1)
    batch_max_rows: int = Field(default=100_000, ge=1)
    batch_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    batch_errors_kept: int = Field(default=100, ge=0, description="Row errors kept per batch task.")
    dynamic_batching: bool = Field(default=True, description="Coalesce concurrent /predict/single calls.")
    dynamic_batch_window_ms: float = Field(default=1.0, ge=0.0, le=2.0)
    dynamic_batch_max: int = Field(default=64, ge=1)
    model_registry: str | None = Field(default=None, description="Registry dir; default: the packaged one.")
    model_refresh_seconds: float = Field(default=5.0, gt=0)
    dead_letter_redrive_max: int = Field(
        default=REDRIVE_MAX_DEFAULT, ge=1,
        description="Redrives after which a dead letter that fails again is quarantined, not redriven.",
    )

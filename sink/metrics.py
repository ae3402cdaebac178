"""Prometheus metrics of the sink (process-wide, registered once at import)."""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import Counter, Gauge, Histogram

ROWS_IN = Counter("sink_rows_in_total", "Records consumed.", ["topic"])
ROWS_STORED = Counter("sink_rows_stored_total", "Rows newly inserted into Postgres.", ["table"])
DUPLICATES = Counter("sink_duplicates_total", "Redelivered predictions skipped by event_id.")
INVALID = Counter("sink_invalid_total", "Predictions that failed validation and were dead-lettered.")
CACHE_FAILURES = Counter("sink_cache_failures_total", "Batches whose Redis write failed.")
DB_FAILURES = Counter("sink_db_failures_total", "Failed Postgres attempts (each one is retried).")
WRITE_SECONDS = Histogram(
    "sink_write_seconds",
    "Postgres transaction per batch (the Redis write after it is not included).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CONSUMER_LAG = Gauge(
    "sink_consumer_lag",
    "Records not yet consumed: the partition's real end offset (infra.stats.EndOffsets) minus the position.",
    ["topic", "partition"],
)


def set_lag(partition: TopicPartition, lag: int) -> None:
    """Record the lag of one partition."""
    CONSUMER_LAG.labels(partition.topic, str(partition.partition)).set(lag)

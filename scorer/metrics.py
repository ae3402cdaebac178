"""Prometheus metrics of the scorer (process-wide, registered once at import)."""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("scorer_events_in_total", "Records consumed from the feature topics.")
EVENTS_OUT = Counter("scorer_events_out_total", "Predictions published and acknowledged by the broker.")
DEAD_LETTERS = Counter("scorer_dead_letters_total", "Records sent to the dead-letter topic.", ["stage"])
BATCH_SIZE = Histogram(
    "scorer_batch_size", "Records per micro-batch.", buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000)
)
INFERENCE_SECONDS = Histogram(
    "scorer_inference_seconds",
    "One engine.score call on a micro-batch.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
TRANSACTIONS = Counter(
    "scorer_transactions_total", "Exactly-once transactions, by outcome (committed, aborted).", ["outcome"]
)
TRANSACTION_SECONDS = Histogram(
    "scorer_transaction_seconds",
    "From a transaction's begin to its commit (the checkpoint interval bounds most of it).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CONSUMER_LAG = Gauge(
    "scorer_consumer_lag",
    "Records not yet consumed: the partition's real end offset (infra.stats.EndOffsets) minus the position.",
    ["topic", "partition"],
)


def set_lag(partition: TopicPartition, lag: int) -> None:
    """Record the lag of one partition."""
    CONSUMER_LAG.labels(partition.topic, str(partition.partition)).set(lag)


def transaction_committed(seconds: float) -> None:
    """Count one committed transaction and its duration."""
    TRANSACTIONS.labels("committed").inc()
    TRANSACTION_SECONDS.observe(seconds)


def transaction_aborted() -> None:
    """Count one aborted transaction."""
    TRANSACTIONS.labels("aborted").inc()

"""Kafka topic names and consumer groups: part of the public contract."""

from dataclasses import dataclass

CUSTOMER_FEATURES = "customer-features.v1"
BATCH_ROWS = "batch-rows.v1"
PREDICTIONS = "predictions.v1"
DEAD_LETTER = "dead-letter.v1"
PREDICTIONS_SHADOW = "predictions-shadow.v1"
"""The shadow version's predictions (same Prediction contract); stored apart, never served."""
OUTCOMES = "outcomes.v1"
"""Purchases reported after the fact (schemas.outcomes.Outcome), keyed by customer_id."""
PREDICTIONS_REPLAY = "predictions-replay.v1"
"""Logged events re-scored by a replay's version (same Prediction contract); never served, never cached."""

ALL_TOPICS: tuple[str, ...] = (
    CUSTOMER_FEATURES, BATCH_ROWS, PREDICTIONS, DEAD_LETTER, PREDICTIONS_SHADOW, OUTCOMES, PREDICTIONS_REPLAY,
)

SCORER_GROUP = "scorer"
SINK_GROUP = "sink"


@dataclass(frozen=True)
class ConsumerContract:
    """One consumer group of the pipeline: what it reads, and its name in the AsyncAPI document."""

    group: str
    topics: tuple[str, ...]
    operation: str
    description: str


SCORER = ConsumerContract(
    SCORER_GROUP,
    (CUSTOMER_FEATURES, BATCH_ROWS),
    "ScoreMicroBatch",
    "Score one micro-batch; its offsets commit only once the broker has every result.",
)
SINK = ConsumerContract(
    SINK_GROUP,
    (PREDICTIONS, DEAD_LETTER, PREDICTIONS_SHADOW, OUTCOMES),
    "StoreRecords",
    "Store a batch of predictions, outcomes and dead letters; its offsets commit only once it is stored.",
)
CONSUMERS: tuple[ConsumerContract, ...] = (SCORER, SINK)

"""Kafka topic names and consumer groups: part of the public contract."""

CUSTOMER_FEATURES = "customer-features.v1"
BATCH_ROWS = "batch-rows.v1"
PREDICTIONS = "predictions.v1"
DEAD_LETTER = "dead-letter.v1"

ALL_TOPICS: tuple[str, ...] = (CUSTOMER_FEATURES, BATCH_ROWS, PREDICTIONS, DEAD_LETTER)

SCORER_GROUP = "scorer"
SINK_GROUP = "sink"

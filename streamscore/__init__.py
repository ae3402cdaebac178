"""StreamScore: shared plumbing (CLI, tables, database and Kafka helpers) for the services."""

"""The sink service: predictions and dead letters into Postgres (system of record) and Redis (cache)."""

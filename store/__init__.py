"""Storage shared by the services: tables, batch jobs, predictions, users and keys, the Redis cache key."""

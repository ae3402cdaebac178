"""The operator console: dashboard, registry, shadow and drift routes, scorer stats, docs and AsyncAPI."""

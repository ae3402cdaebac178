"""The scorer service: micro-batched inference from feature topics to predictions.v1."""

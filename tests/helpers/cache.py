"""Reading the sink's Redis values the way the API does (store.cache owns their layout)."""

from __future__ import annotations

from schemas.messages import Prediction
from store.cache import cached_json


def cached_prediction(raw: bytes | str | None) -> Prediction | None:
    """The Prediction of a cached value, or None for a miss."""
    found = cached_json(raw)
    return None if found is None else Prediction.model_validate_json(found)

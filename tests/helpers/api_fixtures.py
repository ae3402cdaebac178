"""Fixtures of the API tests (registered in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from tests.helpers.api import Api, api_settings, running_api


@pytest.fixture(scope="session")
def inference_engine() -> InferenceEngine:
    """The packaged registry's active model, loaded once for the API tests."""
    return InferenceEngine.load()


@pytest.fixture
async def api(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine
) -> AsyncIterator[Api]:
    """The API with default settings on the real broker, a fresh database and Redis."""
    async with running_api(
        api_settings(kafka_settings, database_url, redis_url), inference_engine
    ) as running:
        yield running

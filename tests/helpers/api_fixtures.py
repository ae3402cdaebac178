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
    """The API with default settings on the real broker, a fresh database and Redis, but for Redis reads
    given 1 s: a test's reads that should hit Redis must not fall back to Postgres because a busy host held
    the loop past the production 50 ms (tests of that fallback make their own API: e2e/test_faults.py)."""
    settings = api_settings(kafka_settings, database_url, redis_url, redis_timeout_seconds=1.0)
    async with running_api(settings, inference_engine) as running:
        yield running

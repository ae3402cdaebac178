"""Per-principal rate limiting against real Redis, including what happens when Redis is down."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from ingest_api.auth.rate_limit import WINDOW_SECONDS, RateLimiter
from ingest_api.settings import ApiSettings
from tests.helpers.security import SECRET, SecureApp, add_key, close_app, open_app, wait_for_fresh_window

DEAD_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the real Redis."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def namespace() -> str:
    """A per-test key namespace, so tests sharing Redis do not share counters."""
    return f"test-rl-{uuid.uuid4().hex[:10]}"


async def limited_app(database_url: str, redis_url: str, limit: int) -> SecureApp:
    """The security test app with a given per-minute limit."""
    settings = ApiSettings(
        database_url=database_url, redis_url=redis_url, jwt_secret=SECRET, rate_limit=limit
    )
    return await open_app(settings)


async def test_over_the_limit_is_429_with_retry_after(
    database_url: str, redis_url: str, unique_id: str
) -> None:
    app = await limited_app(database_url, redis_url, limit=3)
    try:
        key = await add_key(app, f"busy-{unique_id}", ["read"])
        other = await add_key(app, f"calm-{unique_id}", ["read"])
        await wait_for_fresh_window()
        statuses = [
            (await app.client.get("/read-only", headers={"X-API-Key": key})).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        limited = await app.client.get("/read-only", headers={"X-API-Key": key})
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= WINDOW_SECONDS
        # The budget is per principal: another key is unaffected.
        assert (await app.client.get("/read-only", headers={"X-API-Key": other})).status_code == 200
    finally:
        await close_app(app)


async def test_zero_disables_the_limit(database_url: str, redis_url: str, unique_id: str) -> None:
    app = await limited_app(database_url, redis_url, limit=0)
    try:
        key = await add_key(app, f"free-{unique_id}", ["read"])
        statuses = {
            (await app.client.get("/read-only", headers={"X-API-Key": key})).status_code for _ in range(20)
        }
        assert statuses == {200}
    finally:
        await close_app(app)


async def test_processes_share_one_budget_through_redis(redis: Redis, namespace: str) -> None:
    await wait_for_fresh_window()
    first = RateLimiter(redis, 10, namespace=namespace, sync_interval_s=0)
    second = RateLimiter(redis, 10, namespace=namespace, sync_interval_s=0)
    assert all([(await first.hit("p")).allowed for _ in range(6)])
    outcomes = [(await second.hit("p")).allowed for _ in range(6)]
    assert outcomes == [True, True, True, True, False, False]
    assert not (await first.hit("p")).allowed


async def test_batched_sync_counts_every_hit_in_redis(redis: Redis, namespace: str) -> None:
    await wait_for_fresh_window()
    limiter = RateLimiter(redis, 1_000, namespace=namespace, sync_interval_s=60)
    assert all([(await limiter.hit("p")).allowed for _ in range(25)])
    await limiter.flush()
    index = int(time.time() // WINDOW_SECONDS)
    assert await redis.get(f"{namespace}:p:{index}") == b"25"
    assert 0 < await redis.ttl(f"{namespace}:p:{index}") <= 2 * WINDOW_SECONDS


async def test_redis_down_fails_open_to_local_limit(namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    await wait_for_fresh_window()
    dead = Redis.from_url(DEAD_REDIS_URL, socket_connect_timeout=0.2)
    limiter = RateLimiter(dead, 5, namespace=namespace, sync_interval_s=0, retry_after_failure_s=0)
    try:
        with caplog.at_level(logging.WARNING, logger="ingest_api.auth.rate_limit"):
            outcomes = [(await limiter.hit("p")).allowed for _ in range(7)]
        # Requests keep flowing, and this process still enforces the limit on its own traffic.
        assert outcomes == [True] * 5 + [False] * 2
        assert not limiter.redis_healthy
        warnings = [r for r in caplog.records if "failing open" in r.getMessage()]
        assert len(warnings) == 1, "one warning per outage, not one per request"
    finally:
        await dead.aclose()


async def test_redis_is_not_retried_on_every_request_during_an_outage(redis: Redis, namespace: str) -> None:
    await wait_for_fresh_window()
    dead = Redis.from_url(DEAD_REDIS_URL, socket_connect_timeout=0.2)
    limiter = RateLimiter(dead, 100, namespace=namespace, sync_interval_s=0, retry_after_failure_s=30)
    try:
        assert (await limiter.hit("p")).allowed
        assert not limiter.redis_healthy
        # Even with a working client now, no sync is attempted until the back-off has passed.
        limiter.redis = redis
        assert (await limiter.hit("p")).allowed
        index = int(time.time() // WINDOW_SECONDS)
        assert await redis.get(f"{namespace}:p:{index}") is None
        assert not limiter.redis_healthy
    finally:
        await dead.aclose()


async def test_unsynced_hits_reach_redis_when_it_returns(
    redis: Redis, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    await wait_for_fresh_window()
    dead = Redis.from_url(DEAD_REDIS_URL, socket_connect_timeout=0.2)
    limiter = RateLimiter(dead, 100, namespace=namespace, sync_interval_s=0, retry_after_failure_s=0)
    try:
        for _ in range(4):
            assert (await limiter.hit("p")).allowed
        limiter.redis = redis
        with caplog.at_level(logging.WARNING, logger="ingest_api.auth.rate_limit"):
            assert (await limiter.hit("p")).allowed
        assert limiter.redis_healthy
        assert any("Redis is back" in r.getMessage() for r in caplog.records)
        index = int(time.time() // WINDOW_SECONDS)
        assert await redis.get(f"{namespace}:p:{index}") == b"5"
    finally:
        await dead.aclose()


async def test_api_keeps_answering_when_redis_is_down(
    database_url: str, redis_url: str, unique_id: str
) -> None:
    settings = ApiSettings(
        database_url=database_url, redis_url=DEAD_REDIS_URL, jwt_secret=SECRET, rate_limit=1_000
    )
    app = await open_app(settings)
    try:
        key = await add_key(app, f"outage-{unique_id}", ["read"])
        await wait_for_fresh_window()
        statuses = [
            (await app.client.get("/read-only", headers={"X-API-Key": key})).status_code for _ in range(20)
        ]
        assert statuses == [200] * 20
        assert not app.security.limiter.redis_healthy
    finally:
        await close_app(app)

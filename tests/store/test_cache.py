"""The Redis cache on a real Redis: the newest version wins whatever order the writes land in."""

from __future__ import annotations

import redis.asyncio as redis

from store.cache import cache_predictions, cached_json, prediction_key
from store.predictions import cache_version

OLD, NEW = cache_version(1_000, 5), cache_version(1_000, 6)


async def cached(url: str, customer: str) -> bytes | None:
    """The prediction JSON the API would read for the customer under model v1."""
    client = redis.from_url(url)
    try:
        return cached_json(await client.get(prediction_key(customer, "v1")))
    finally:
        await client.aclose()


async def test_newer_version_stays_in_either_order(redis_url: str, unique_id: str) -> None:
    client = redis.from_url(redis_url)
    try:
        for first, second, name in ((OLD, NEW, "a"), (NEW, OLD, "b")):
            customer = f"cache-{unique_id}-{name}"
            payload = {OLD: b'{"v":"old"}', NEW: b'{"v":"new"}'}
            assert await cache_predictions(client, [(customer, "v1", payload[first], first)], 60)
            assert await cache_predictions(client, [(customer, "v1", payload[second], second)], 60)
            assert await cached(redis_url, customer) == b'{"v":"new"}'
            assert 0 < await client.ttl(prediction_key(customer, "v1")) <= 60
    finally:
        await client.aclose()


async def test_a_two_key_layout_value_is_read_then_replaced(redis_url: str, unique_id: str) -> None:
    customer = f"cache-{unique_id}-legacy"
    client = redis.from_url(redis_url)
    try:
        await client.set(prediction_key(customer, "v1"), b'{"v":"legacy"}', ex=60)
        assert await cached(redis_url, customer) == b'{"v":"legacy"}'
        assert await cache_predictions(client, [(customer, "v1", b'{"v":"new"}', OLD)], 60)
        assert await cached(redis_url, customer) == b'{"v":"new"}'
    finally:
        await client.aclose()


async def test_an_unreachable_redis_reports_failure_without_raising() -> None:
    client = redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    try:
        assert not await cache_predictions(client, [("c", "v1", b"{}", OLD)], 60)
    finally:
        await client.aclose()

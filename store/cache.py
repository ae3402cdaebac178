"""Redis cache of the latest prediction per customer and model version (best effort, never moved back)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio import Redis

from store.predictions import cache_version

log = logging.getLogger(__name__)

VERSION_WIDTH = len(cache_version(0, 0))
"""Characters of store.predictions.cache_version (fixed width), which prefixes every cached value."""

# One key per (customer, model version), its value the entry's version followed by the prediction JSON.
# SET unless the cached version is newer, in one round-trip; GETRANGE reads only the version. Versions are
# fixed-width strings of store.predictions.LATEST_ORDER, so the sink's writes and the repair from Postgres
# can interleave in any order and the cache still ends at the latest. A value of the older two-key layout
# (plain JSON, `{` first) is overwritten. (Measured against that layout, GET + EXISTS + 2 SETs per entry:
# Redis CPU 14.4 µs per event, bench/bench_pipeline.py.)
SET_NEWER_SCRIPT = f"""
local written = 0
for i = 1, #KEYS do
    local current = redis.call('GETRANGE', KEYS[i], 0, {VERSION_WIDTH - 1})
    local value = ARGV[i + 1]
    local older = current <= string.sub(value, 1, {VERSION_WIDTH})
    if current == '' or string.byte(current, 1) == 123 or older then
        redis.call('SET', KEYS[i], value, 'EX', ARGV[1])
        written = written + 1
    end
end
return written
"""


def prediction_key(customer_id: str, model_version: str) -> str:
    """`predict:{customer_id}:{model_version}`, the key the API reads."""
    return f"predict:{customer_id}:{model_version}"


def cached_json(raw: bytes | str | None) -> bytes | None:
    """The prediction JSON of a cached value (its version prefix dropped); None for a miss."""
    if raw is None:
        return None
    data = raw.encode() if isinstance(raw, str) else raw
    return data if data[:1] == b"{" else data[VERSION_WIDTH:]


CacheEntry = tuple[str, str, bytes, str]
"""(customer_id, model_version, prediction JSON, version from store.predictions.cache_version)."""


async def cache_predictions(redis: Redis, entries: Sequence[CacheEntry], ttl_seconds: int) -> bool:
    """Cache every entry unless Redis holds a newer version of its key; False if Redis failed.

    Never raises: Postgres is the system of record, and the caller notes failed keys for repair.
    """
    if not entries:
        return True
    keys = [prediction_key(customer_id, model_version) for customer_id, model_version, _, _ in entries]
    values = [version.encode() + value for _, _, value, version in entries]
    try:
        await redis.eval(SET_NEWER_SCRIPT, len(keys), *keys, ttl_seconds, *values)
    except Exception as error:  # Redis down, frozen or slow must not stop the sink
        log.warning("prediction cache write failed", extra={"rows": len(entries), "error": repr(error)})
        return False
    return True

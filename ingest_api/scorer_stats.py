"""The live scorers' Redis stats hashes (stats:scorer:*), decoded, for the shadow and drift routes."""

from __future__ import annotations

from typing import Any

SCORER_STATS_PATTERN = "stats:scorer:*"


async def scorer_hashes(redis: Any) -> dict[str, dict[str, str]]:
    """Every live scorer instance's stats hash, by instance key, as text; a Redis failure raises."""
    keys = sorted([key async for key in redis.scan_iter(match=SCORER_STATS_PATTERN, count=100)])
    if not keys:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        hashes = await pipe.execute()
    decoded: dict[str, dict[str, str]] = {}
    for key, fields in zip(keys, hashes, strict=True):
        if fields:
            name = key.decode() if isinstance(key, bytes) else str(key)
            decoded[name.removeprefix("stats:scorer:")] = {_text(k): _text(v) for k, v in fields.items()}
    return decoded


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def number(fields: dict[str, str], name: str) -> float | None:
    """A numeric stats field, or None when absent or empty."""
    try:
        return float(fields[name]) if fields.get(name) else None
    except ValueError:
        return None

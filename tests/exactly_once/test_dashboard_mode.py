"""The dashboard shows the scorer's processing guarantee, from the stats hash each scorer writes."""

from __future__ import annotations

import time

import redis.asyncio as redis

from infra.stats import queue_stats_write
from ingest_api.console.data import RateTracker, pipeline_stats


def scorer_hash(guarantee: str) -> dict[str, str]:
    """The fields of a live scorer's stats hash that matter here."""
    return {"events_in": "5", "processing_guarantee": guarantee, "updated_at": f"{time.time():.3f}"}


async def test_dashboard_reads_each_scorer_s_guarantee_and_says_mixed_when_they_differ(
    redis_url: str,
) -> None:
    # A logical database of its own: pipeline_stats sums every live scorer hash it finds.
    client = redis.from_url(redis_url.rsplit("/", 1)[0] + "/13")
    try:
        await client.flushdb()
        async with client.pipeline(transaction=False) as pipe:
            queue_stats_write(pipe, "stats:scorer:a", scorer_hash("exactly-once"), time.time())
            await pipe.execute()
        roles, _ = await pipeline_stats(client, RateTracker())
        assert roles["scorer"].guarantee == "exactly-once"
        async with client.pipeline(transaction=False) as pipe:
            queue_stats_write(pipe, "stats:scorer:b", scorer_hash("at-least-once"), time.time())
            await pipe.execute()
        roles, _ = await pipeline_stats(client, RateTracker())
        assert roles["scorer"].guarantee == "mixed" and roles["sink"].guarantee == ""
    finally:
        await client.flushdb()
        await client.aclose()

"""The API's broker readiness check on a three-broker cluster: a follower SIGKILLed while acks=all produces
flow holds the producer's own connections back for seconds, but the check still answers at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable

import pytest
from aiokafka import AIOKafkaProducer

from infra.kafka import any_broker_answers, ensure_topics, producer_options, topic_name
from infra.kafka_connection import connection_options
from schemas import topics
from streamscore.kafka_server import KafkaCluster
from tests.helpers.engines import Broker, broker_settings

pytestmark = [pytest.mark.engines, pytest.mark.slow]

READY_DEADLINE_S = 1.0  # ingest_api.routes.health: each /ready check is cut off at it


async def took(check: Awaitable[object], limit_s: float = 5.0) -> float:
    """Seconds until `check` answered (`limit_s` when it did not)."""
    started = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(check, limit_s)
    return round(time.monotonic() - started, 3)


async def test_any_broker_answers_while_produces_wait_for_a_dead_follower(
    kafka_cluster3: KafkaCluster,
) -> None:
    broker = Broker("kafka", kafka_cluster3.bootstrap, idempotent=True)
    settings = broker_settings(broker, replication_factor=3)
    await ensure_topics(settings, (topics.CUSTOMER_FEATURES,))
    topic = topic_name(settings, topics.CUSTOMER_FEATURES)
    producer = AIOKafkaProducer(**connection_options(settings), **producer_options(settings))
    await producer.start()
    stopping = False

    async def flow() -> None:  # acks=all on every partition, as the API publishes events
        # Acks are not awaited round by round: a round waiting on the dead broker's partitions (until a new
        # leader, seconds) stopped all produces, so the live leaders often had none in flight to stall on.
        acks = []
        while not stopping:
            acks += [await producer.send(topic, b"x" * 200, key=str(n).encode()) for n in range(30)]
            await asyncio.sleep(0.02)
        await asyncio.gather(*acks, return_exceptions=True)

    flowing = asyncio.create_task(flow())
    try:
        await asyncio.sleep(1)
        assert await any_broker_answers(producer.client) == 3
        kafka_cluster3.kill(3)
        killed = time.monotonic()
        probe_s: list[float] = []
        shared_s: list[float] = []

        async def probe() -> None:  # side by side with the producer's own metadata requests below
            while time.monotonic() - killed < 8:  # the controller fences a dead broker after 6 s
                probe_s.append(await took(any_broker_answers(producer.client)))
                await asyncio.sleep(0.1)

        probing = asyncio.create_task(probe())
        while time.monotonic() - killed < 8:
            shared_s.append(await took(producer.client.fetch_all_metadata()))
            await asyncio.sleep(0.1)
        await probing
    finally:
        stopping = True
        await flowing
        await producer.stop()
    print(f"BROKER PROBE after a follower's SIGKILL: own connections max {max(probe_s)} s, "
          f"the producer's max {max(shared_s)} s ({len(probe_s)} probes)")
    assert max(shared_s) > READY_DEADLINE_S  # the stall the probe avoids happened
    assert max(probe_s) < READY_DEADLINE_S / 2

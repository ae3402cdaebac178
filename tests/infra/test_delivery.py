"""Output isolation logic: records rejected for themselves are found in halves, nothing delivered twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from infra.delivery import Backoff, Outgoing, isolate_failing, publish_isolated


class RejectingBroker:
    """Accepts a request only if it holds no poison value (as Kafka rejects a whole too-large request)."""

    def __init__(self, outages: int = 0) -> None:
        self.delivered: Counter[bytes] = Counter()
        self.requests = 0
        self.outages = outages

    async def send(
        self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]
    ) -> list[tuple[Any, list[int]]]:
        self.requests += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.outages:
            self.outages -= 1
            future.set_exception(KafkaConnectionError("broker down"))
        elif any(value.startswith(b"poison") for _, value in messages):
            future.set_exception(MessageSizeTooLargeError("too large"))
        else:
            self.delivered.update(value for _, value in messages)
            future.set_result(None)
        return [(future, list(range(len(messages))))]


async def test_rejected_records_are_isolated_and_the_rest_delivered_exactly_once() -> None:
    broker = RejectingBroker(outages=2)
    values = [b"poison-%d" % i if i in (3, 77) else b"ok-%d" % i for i in range(100)]
    messages = [Outgoing("t", None, value, i) for i, value in enumerate(values)]

    rejected = await publish_isolated(broker.send, messages, Backoff(initial_s=0.01, window_s=5))

    assert sorted(m.origin for m, _ in rejected) == [3, 77]
    assert set(broker.delivered.values()) == {1} and len(broker.delivered) == 98
    assert broker.requests < 30  # halving, not one request per record


async def test_transient_failure_beyond_the_window_is_raised_not_dead_lettered() -> None:
    broker = RejectingBroker(outages=1000)
    messages = [Outgoing("t", None, b"ok", 0)]
    try:
        await publish_isolated(broker.send, messages, Backoff(initial_s=0.01, max_s=0.02, window_s=0.1))
    except KafkaConnectionError:
        pass
    else:
        raise AssertionError("a transient failure must propagate after the window")


async def test_isolate_failing_commits_disjoint_parts_and_returns_the_bad_items() -> None:
    committed: list[int] = []

    async def attempt(items: Sequence[int]) -> None:
        if 13 in items:
            raise ValueError("row 13 is rejected")
        committed.extend(items)

    failures = await isolate_failing(list(range(40)), attempt, lambda e: isinstance(e, ValueError))

    assert [item for item, _ in failures] == [13]
    assert sorted(committed) == [i for i in range(40) if i != 13]

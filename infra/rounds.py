"""Loops that run until their task is cancelled: they take a cancellation even when a client swallowed it.

Python 3.11's `asyncio.wait_for` returns its result instead of raising when a cancellation lands in the
loop iteration its inner future completes (python/cpython#86296; 3.12 rewrote it). Clients await it inside
their calls (redis-py's sends, aiokafka's requests, our own timeouts), so a loop that only awaits again
after them would take such a cancellation for nothing and run on, holding up its service's stop.
"""

from __future__ import annotations

import asyncio


def stop_if_cancelled() -> None:
    """Raise CancelledError when this task was asked to stop and nothing raised it yet."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def sleep_or_stop(seconds: float) -> None:
    """Between two rounds: stop if the task was cancelled during the last one, else sleep `seconds`."""
    stop_if_cancelled()
    await asyncio.sleep(seconds)

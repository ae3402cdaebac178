"""A background loop stops even when a `wait_for` in its round swallowed the cancellation (Python 3.11)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from infra.rounds import sleep_or_stop


async def cancelled_as_its_wait_completes(pause: Callable[[float], Awaitable[None]]) -> asyncio.Task[None]:
    """A loop whose round awaits `wait_for`; it is cancelled in the loop iteration that wait completes."""
    waits: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

    async def rounds() -> None:
        while True:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waits.put_nowait(done)
            await asyncio.wait_for(done, 10)
            await pause(0.01)

    task = asyncio.create_task(rounds())
    done = await waits.get()
    await asyncio.sleep(0)  # the round is now inside wait_for
    done.set_result(None)
    task.cancel()
    await asyncio.wait({task}, timeout=0.5)
    return task


async def test_a_cancellation_a_wait_for_swallowed_still_stops_the_loop() -> None:
    stopped = await cancelled_as_its_wait_completes(sleep_or_stop)
    assert stopped.cancelled()

    plain = await cancelled_as_its_wait_completes(asyncio.sleep)
    if sys.version_info < (3, 12):  # the race the helper exists for: the plain loop runs on
        assert not plain.done()
    plain.cancel()
    await asyncio.wait({plain}, timeout=1.0)
    assert plain.done()

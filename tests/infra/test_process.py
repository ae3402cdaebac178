"""Shutdown steps are bounded: a stuck close or a task that swallows its cancellation cannot wedge exit."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from infra.process import bounded, cancel_tasks


class Stubborn:
    """A coroutine that ignores cancellation (as a client stuck in a retry loop might) until released."""

    def __init__(self) -> None:
        self.released = False

    async def __call__(self) -> None:
        while not self.released:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue


async def test_a_stuck_shutdown_step_is_left_behind_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    stuck = Stubborn()
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="infra.process"):
        await bounded(stuck, "stuck client", seconds=0.2)()
    assert time.monotonic() - started < 2.0
    stuck.released = True  # lets the left-behind task end before the session's loop closes
    assert [r.getMessage() for r in caplog.records] == ["shutdown step still running; left behind"]
    assert caplog.records[0].step == "stuck client"  # type: ignore[attr-defined]


async def test_a_finished_step_returns_its_outcome() -> None:
    done: list[str] = []

    async def close() -> None:
        done.append("closed")

    async def broken() -> None:
        raise RuntimeError("close failed")

    await bounded(close, "client")()
    assert done == ["closed"]
    with pytest.raises(RuntimeError, match="close failed"):
        await bounded(broken, "client")()


async def test_cancel_tasks_leaves_a_task_that_ignores_cancellation(caplog: pytest.LogCaptureFixture) -> None:
    polite = asyncio.create_task(asyncio.sleep(3600), name="polite")
    stuck = Stubborn()
    rude = asyncio.create_task(stuck(), name="rude")
    tasks = [polite, rude]
    await asyncio.sleep(0)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="infra.process"):
        await cancel_tasks(tasks, seconds=0.2)
    assert time.monotonic() - started < 2.0
    assert tasks == [] and polite.cancelled() and not rude.done()
    assert [r.task for r in caplog.records] == ["rude"]  # type: ignore[attr-defined]
    stuck.released = True
    await asyncio.wait_for(rude, 1.0)


async def test_cancel_tasks_raises_what_a_task_failed_with() -> None:
    async def fails() -> None:
        raise ValueError("bad task")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="bad task"):
        await cancel_tasks([task], seconds=1.0)

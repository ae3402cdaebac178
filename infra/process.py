"""Run one FastStream consumer service as a process: JSON logs, optional Prometheus port, uvloop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from faststream import FastStream
from prometheus_client import start_http_server

from infra.logging import configure_logging

log = logging.getLogger(__name__)

class StartupRefused(RuntimeError):
    """The service cannot run as configured: `serve` logs the one line that says why and exits non-zero."""


REFUSED_EXIT_CODE = 2
SHUTDOWN_STEP_SECONDS = 15.0
"""Longest wait for one shutdown step: a client stuck in its close must not wedge the process's exit."""


def serve(app: FastStream, *, service: str, log_level: str, metrics_port: int) -> None:
    """Run the app until SIGINT/SIGTERM."""
    configure_logging(log_level, service=service)
    if metrics_port:
        start_http_server(metrics_port)
    # uvloop: cheaper socket writes and callbacks than the default loop for every Kafka/Postgres hop.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            runner.run(app.run())
        except StartupRefused as error:
            log.error(str(error))
            raise SystemExit(REFUSED_EXIT_CODE) from None


async def cancel_tasks(tasks: list[asyncio.Task[Any]], seconds: float = SHUTDOWN_STEP_SECONDS) -> None:
    """Cancel background tasks, wait up to `seconds` for them to finish, and empty the list.

    A task that outlives the wait (one that swallowed its cancellation) is logged and left behind; the
    first task that failed with anything but its cancellation raises, as awaiting it would.
    """
    for task in tasks:
        task.cancel()
    failed: list[asyncio.Task[Any]] = []
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=seconds)
        for task in pending:
            log.error("background task still running after its cancellation; left behind",
                      extra={"task": task.get_name(), "seconds": seconds})
        failed = [task for task in done if not task.cancelled() and task.exception() is not None]
    tasks.clear()
    if failed:
        failed[0].result()


def bounded(
    step: Callable[[], Awaitable[Any]], name: str, seconds: float = SHUTDOWN_STEP_SECONDS
) -> Callable[[], Awaitable[None]]:
    """A shutdown step that waits at most `seconds`; one still running then is logged and left behind."""

    async def run() -> None:
        task = asyncio.ensure_future(step())
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if not done:
            log.error("shutdown step still running; left behind", extra={"step": name, "seconds": seconds})
            return
        task.result()

    return run

"""Run one FastStream consumer service as a process: JSON logs, optional Prometheus port, uvloop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import uvloop
from faststream import FastStream
from prometheus_client import start_http_server

from infra.logging import configure_logging


def serve(app: FastStream, *, service: str, log_level: str, metrics_port: int) -> None:
    """Run the app until SIGINT/SIGTERM."""
    configure_logging(log_level, service=service)
    if metrics_port:
        start_http_server(metrics_port)
    # uvloop: cheaper socket writes and callbacks than the default loop for every Kafka/Postgres hop.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(app.run())


async def cancel_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel background tasks, wait for each to finish, and empty the list."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    tasks.clear()

"""The dev stack as a subprocess: launch, read its lines, write feature CSVs."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from rich.console import Console
from sqlalchemy.engine import make_url

from schemas.features import FEATURE_NAMES, FEATURE_RANGES
from streamscore.dev import DevStack, Endpoints
from streamscore.embedded import free_port
from tests.helpers.db import asyncpg_dsn

T = TypeVar("T")


CLI = [sys.executable, "-c", "from streamscore.cli import main; main()"]


def write_feature_csv(path: Path, rows: int, seed: int = 7, customer_prefix: str | None = None) -> Path:
    """A CSV of in-range random CoIL rows, optionally with a customer_id column first."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow((["customer_id"] if customer_prefix else []) + list(FEATURE_NAMES))
        for index in range(rows):
            values = [rng.randint(low, high) for low, high in FEATURE_RANGES]
            writer.writerow(([f"{customer_prefix}{index:05d}"] if customer_prefix else []) + values)
    return path


def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run blocking code that calls asyncio.run on a worker thread, away from pytest's event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


async def _admin(admin_url: str, sql: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@dataclass
class Launched:
    """A running API + scorer + sink, and how to reach it."""

    api_url: str
    api_key: str
    bootstrap: str
    database_url: str
    env: dict[str, str]


@contextlib.contextmanager
def launched_stack(
    bootstrap: str, admin_url: str, redis_url: str, home: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Launched]:
    """Start the services like `streamscore dev` does, on the given engines with a fresh database."""
    name = f"ss_dev_{uuid.uuid4().hex[:10]}"
    in_thread(asyncio.run, _admin(admin_url, f'CREATE DATABASE "{name}"'))
    database_url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    env = {
        "STREAMSCORE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}.",
        "STREAMSCORE_KAFKA_PARTITIONS": "3",
        "STREAMSCORE_KAFKA_BOOTSTRAP": bootstrap,
        "STREAMSCORE_DEV_HOME": str(home),
        **(extra_env or {}),
    }
    stack = DevStack(home=home, console=Console(file=io.StringIO()))
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            port = free_port()
            api_key, _ = in_thread(stack.launch, Endpoints(database_url, redis_url, bootstrap, True), port)
        yield Launched(f"http://127.0.0.1:{port}", api_key, bootstrap, database_url, env)
    finally:
        stack.stop()
        in_thread(asyncio.run, _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class LineReader:
    """Collects a subprocess's output lines on a thread, so the test can wait for one."""

    def __init__(self, stream: io.BufferedReader) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: io.BufferedReader) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode(errors="replace"))

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if process.poll() is not None:
                time.sleep(0.2)  # let the pump drain
                raise AssertionError(f"exited {process.returncode} before {needle!r}:\n{self.text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} after {timeout}s:\n{self.text}")
            time.sleep(0.2)


def _dev_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    env.update(STREAMSCORE_DEV_HOME=str(home), COLUMNS="200", PYTHONUNBUFFERED="1")
    return env



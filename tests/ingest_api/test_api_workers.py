"""`streamscore api --workers N`: N processes on one port, each serving, stopped with their supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from infra.settings import KafkaSettings
from ingest_api import workers
from ingest_api.auth.tokens import dev_key_env
from ingest_api.settings import ApiSettings
from schemas.features import FEATURE_RANGES
from streamscore.dev import admin_key
from streamscore.embedded import free_port
from tests.helpers.faults import service_env

CLI = "from streamscore.cli import main; main()"
CONNECTIONS = 16  # all on one worker by chance: 2 * 2**-16
FEATURES = [low for low, _ in FEATURE_RANGES]


def _listening(worker: psutil.Process, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in worker.net_connections("tcp"))


def _served(worker: psutil.Process, port: int) -> int:
    """Client connections this worker holds open on the API port."""
    return sum(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
               for c in worker.net_connections("tcp"))


def _start_api(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-c", CLI, "api", "--port", str(port), "--workers", "2"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _check(api: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    assert api.poll() is None, f"the API exited with {api.returncode}:\n{log.read_text()}"
    assert time.monotonic() < deadline, f"too slow:\n{log.read_text()}"


async def _until(predicate: Callable[[], bool], within_s: float, api: subprocess.Popen[bytes],
                 log: Path) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        _check(api, log, deadline)
        await asyncio.sleep(0.25)


@pytest.mark.slow
async def test_two_workers_share_the_port_both_serve_and_stop_with_the_parent(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "api.log"
    env = {**os.environ, **service_env(kafka_settings, database_url, redis_url, dev_mode="true")}
    headers = {"X-API-Key": await admin_key(database_url)}
    api = _start_api(port, env, log)
    parent = psutil.Process(api.pid)
    try:
        await _until(lambda: len(parent.children()) == 2, 20, api, log)
        children = parent.children()
        # Each worker listens once its app is ready (model loaded, engines connected).
        await _until(lambda: all(_listening(w, port) for w in children), 90, api, log)
        clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers)
                   for _ in range(CONNECTIONS)]  # a pool each: one connection each
        try:
            answers = await asyncio.gather(*(
                client.post("/api/v1/predict/single", json={"customer_id": f"w-{n}", "features": FEATURES})
                for n, client in enumerate(clients)))
            served = {child.pid: _served(child, port) for child in children}
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))
        assert [answer.status_code for answer in answers] == [200] * CONNECTIONS, answers[0].text
        assert sum(served.values()) == CONNECTIONS and all(served.values()), served

        api.send_signal(signal.SIGTERM)  # the parent only: it relays the stop to its workers
        code = await asyncio.to_thread(api.wait, 30)
        _, alive = psutil.wait_procs(children, timeout=5)
    finally:
        if api.poll() is None:
            for process in [*parent.children(), parent]:
                process.kill()
            api.wait()
    text = await asyncio.to_thread(log.read_text)
    assert code == 0 and not alive, text
    assert text.count('"api stopping"') == 2, text  # each worker's lifespan shut down (drained)


def test_a_worker_that_dies_stops_the_others_and_fails_the_parent() -> None:
    sleeper = "[sys.executable, '-c', 'import time; time.sleep(60)']"
    parent = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ingest_api.workers import supervise; "
                               f"sys.exit(supervise('127.0.0.1', 0, 2, command={sleeper}))"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while len(children := psutil.Process(parent.pid).children()) < 2:
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        children[0].kill()
        _, errors = parent.communicate(timeout=10)
        _, alive = psutil.wait_procs(children[1:], timeout=5)
    finally:
        parent.kill()
    assert parent.returncode == 1 and not alive, errors
    assert b"api worker exited on its own; stopping the others" in errors


def test_the_option_overrides_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: list[int] = []

    def supervise(host: str, port: int, count: int) -> int:
        counts.append(count)
        return 0

    monkeypatch.setattr(workers, "supervise", supervise)
    monkeypatch.setenv("STREAMSCORE_API_WORKERS", "3")

    assert workers.serve("127.0.0.1", 0) == 0 and workers.serve("127.0.0.1", 0, 2) == 0
    assert counts == [3, 2]


def test_dev_mode_hands_every_worker_one_generated_jwt_key() -> None:
    hs256 = dev_key_env(ApiSettings(dev_mode=True, jwt_secret=None))
    rs256 = dev_key_env(ApiSettings(dev_mode=True, jwt_algorithm="RS256"))

    assert len(hs256["STREAMSCORE_JWT_SECRET"]) >= 32
    assert rs256["STREAMSCORE_JWT_PRIVATE_KEY"].startswith("-----BEGIN PRIVATE KEY-----")
    assert dev_key_env(ApiSettings(dev_mode=True, jwt_secret="s" * 32)) == {}
    assert dev_key_env(ApiSettings(dev_mode=False, jwt_secret=None)) == {}

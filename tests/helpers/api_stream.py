"""Events posted through a running `streamscore api` process in paced chunks, retried on 503 as a client
should (same event ids), with every answer counted."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

import httpx

from schemas.messages import FeatureEvent
from streamscore.dev import admin_key
from streamscore.embedded import free_port
from tests.helpers.faults import service_process, sigkill

EVENTS_PATH = "/api/v1/events"


@dataclass
class ApiProcess:
    """A `streamscore api` child process, its URL and an admin API key."""

    process: Popen[bytes]
    url: str
    key: str
    log_path: Path


async def start_api(env: dict[str, str], database_url: str, log_path: Path, within_s: float) -> ApiProcess:
    """Start `streamscore api` on a free port and wait until /health answers (its lifespan has run)."""
    port = free_port()
    key = await admin_key(database_url)
    process = service_process("api", {**env, "STREAMSCORE_DEV_MODE": "true"}, log_path, "--port", str(port))
    api = ApiProcess(process, f"http://127.0.0.1:{port}", key, log_path)
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(base_url=api.url, timeout=2) as client:
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if (await client.get("/health")).status_code == 200:
                    return api
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    if process.poll() is None:
        sigkill(process)
    output = await asyncio.to_thread(log_path.read_text, errors="replace")
    raise AssertionError(f"the API did not serve within {within_s:.0f} s (exit {process.returncode}):\n"
                         f"{output}")


def event_body(events: list[FeatureEvent]) -> list[dict[str, object]]:
    """The JSON array a client posts (its own event ids, so a retried request is stored once)."""
    return [{"event_id": str(e.event_id), "customer_id": e.customer_id, "features": list(e.features)}
            for e in events]


@dataclass
class ApiStream:
    """Posts `chunk` events every `tick_s` on a background task until stopped or the pool is used up.

    A refused request (any answer but 202, or no answer) is posted again later with the same event ids,
    until it is accepted: what a client is told to do with a 503.
    """

    api: ApiProcess
    pool: list[FeatureEvent]
    chunk: int = 20
    tick_s: float = 0.2
    answers: Counter[int] = field(default_factory=Counter)  # status code (0: no answer) -> requests
    accepted: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # the first line of each non-202 answer
    taken: int = 0  # events of the pool posted at least once
    stopping: bool = False
    task: asyncio.Task[None] | None = None

    async def _post(self, client: httpx.AsyncClient, batch: list[FeatureEvent]) -> bool:
        try:
            answer = await client.post(EVENTS_PATH, json=event_body(batch))
            status, text = answer.status_code, answer.text
        except httpx.HTTPError as error:
            status, text = 0, repr(error)
        self.answers[status] += 1
        if status == 202:
            self.accepted += [str(e.event_id) for e in batch]
            return True
        self.refusals.append(f"{status} {text[:200]}")
        return False

    async def _run(self) -> None:
        retry: deque[list[FeatureEvent]] = deque()
        async with httpx.AsyncClient(base_url=self.api.url, headers={"X-API-Key": self.api.key},
                                     timeout=90) as client:
            while retry or (not self.stopping and self.taken < len(self.pool)):
                if retry:
                    batch = retry.popleft()
                else:
                    batch = self.pool[self.taken:self.taken + self.chunk]
                    self.taken += len(batch)
                if not await self._post(client, batch):
                    retry.append(batch)
                await asyncio.sleep(self.tick_s)

    def start(self) -> ApiStream:
        """Begin posting."""
        self.task = asyncio.create_task(self._run())
        return self

    async def finished(self, stop: bool = False, within_s: float = 120.0) -> list[str]:
        """Wait until every event taken (with stop: no new ones) was accepted; the accepted event ids."""
        assert self.task is not None
        self.stopping = stop
        await asyncio.wait_for(asyncio.shield(self.task), within_s)
        return self.accepted

    async def cancel(self) -> None:
        """Stop at once (cleanup after a failure)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@dataclass
class ReadinessProbe:
    """GETs /ready every `every_s` on a background task and keeps (time, status) of each answer."""

    api: ApiProcess
    every_s: float = 0.5
    answers: list[tuple[float, int]] = field(default_factory=list)
    unready: list[str] = field(default_factory=list)  # the body of each answer but 200 (which check failed)
    task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.api.url, headers={"X-API-Key": self.api.key},
                                     timeout=5) as client:
            while True:
                try:
                    answer = await client.get("/ready")
                    status, text = answer.status_code, answer.text
                except httpx.HTTPError as error:
                    status, text = 0, repr(error)
                self.answers.append((time.monotonic(), status))
                if status != 200:
                    self.unready.append(text[:500])
                await asyncio.sleep(self.every_s)

    def start(self) -> ReadinessProbe:
        """Begin probing."""
        self.task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        """Stop probing."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def since(self, moment: float) -> dict[int, int]:
        """Answers per status code from `moment` on."""
        return dict(Counter(status for at, status in self.answers if at >= moment))

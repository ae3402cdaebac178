"""A real uvicorn server with the API's own options (bounded httptools protocol) on loopback, in-loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import uvicorn
from fastapi import FastAPI

from ingest_api.main import server_options
from ingest_api.settings import ApiSettings
from streamscore.embedded import free_port


@dataclass
class Served:
    """Where the server listens, and the /health latencies a prober measured meanwhile.

    `loop_cpu_s` is what the loop's thread ran during each probe: its wait minus the time the host did not
    run this process at all (a noisy machine), so it is the part the server's own work can cause.
    """

    host: str
    port: int
    client: httpx.AsyncClient
    latencies_s: list[float] = field(default_factory=list)
    loop_cpu_s: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def serve(
    app: FastAPI, settings: ApiSettings, *, send_buffer: int | None = None
) -> AsyncIterator[Served]:
    """Serve an app whose lifespan is already entered (lifespan off here) until the block ends.

    uvicorn gets the production options of `settings` (`ingest_api.main.server_options`); the loop is
    the test's own. `send_buffer` fixes the kernel's send buffer of every connection (a client that stops
    reading then holds the response open, instead of the kernel taking up to 4 MiB of it).
    """
    port = free_port()
    options = {**server_options(settings), "loop": "asyncio"}
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", **options)
    server = uvicorn.Server(config)
    sockets = None
    if send_buffer is not None:  # accepted connections inherit the size, and a set size is never grown
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        listener.bind(("127.0.0.1", port))
        sockets = [listener]
    task = asyncio.create_task(server.serve(sockets=sockets))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield Served("127.0.0.1", port, client)
    finally:
        server.should_exit = True
        try:
            await task
        finally:
            for listener in sockets or ():  # ours: uvicorn closes it only once it has served
                listener.close()


@contextlib.asynccontextmanager
async def probing_health(served: Served, every_s: float = 0.02, tail_s: float = 0.1) -> AsyncIterator[Served]:
    """GET /health in a loop for the block's duration (and `tail_s` after), recording each latency.

    The prober's client is built and warmed up before the block starts, so its own set-up cost (TLS
    context, first connection) is not counted as the server's.
    """
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=served.url, timeout=5) as client:
        assert (await client.get("/health")).status_code == 200

        async def probe() -> None:
            while not stop.is_set():
                started, cpu_started = time.perf_counter(), time.thread_time()
                response = await client.get("/health")
                served.latencies_s.append(time.perf_counter() - started)
                served.loop_cpu_s.append(time.thread_time() - cpu_started)
                assert response.status_code == 200
                await asyncio.sleep(every_s)

        task = asyncio.create_task(probe())
        try:
            yield served
            await asyncio.sleep(tail_s)
        finally:
            stop.set()
            await task


async def raw_exchange(served: Served, head: bytes, body_chunks: list[bytes] | None = None,
                       timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Send a raw request head (then chunks, stopping if the server answers or closes); (status, reply)."""
    reader, writer = await asyncio.open_connection(served.host, served.port)
    answer = asyncio.create_task(reader.read(65536))
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            await writer.drain()
            for chunk in body_chunks or ():
                if answer.done():  # the server answered (or closed) before the body: stop sending
                    break
                writer.write(chunk)
                await writer.drain()
        reply = b""
        with contextlib.suppress(ConnectionError):
            reply = await asyncio.wait_for(answer, timeout_s)
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    return status, reply

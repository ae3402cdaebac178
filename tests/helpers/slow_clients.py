"""A slowloris client in its own process: N connections that each send `payload` and then wait.

`python -m tests.helpers.slow_clients HOST PORT COUNT WAIT_S [PAYLOAD]` prints one JSON line: how many
the server closed (and how many of those with a 408), how many were still open after WAIT_S, and when
the last closed. Run apart from the server so the attack's own client work is not counted as the server's.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

HALF_HEAD = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


async def attack(host: str, port: int, count: int, wait_s: float, payload: bytes) -> dict[str, Any]:
    """Open `count` connections 100 every 50 ms, send `payload` on each, and watch them for `wait_s`."""
    started = time.perf_counter()
    closed_at: list[float] = []
    replies: list[bytes | None] = []
    refused = 0

    async def one() -> None:
        nonlocal refused
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            refused += 1
            return
        writer.write(payload)
        try:
            left_s = max(0.0, started + wait_s - time.perf_counter())
            reply: bytes | None = await asyncio.wait_for(reader.read(), left_s)
            closed_at.append(time.perf_counter() - started)
        except TimeoutError:
            reply = None
        except ConnectionError:
            reply = b""
            closed_at.append(time.perf_counter() - started)
        replies.append(reply)
        writer.close()

    tasks: list[asyncio.Task[None]] = []
    for index in range(0, count, 100):
        tasks.extend(asyncio.create_task(one()) for _ in range(min(100, count - index)))
        await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    return {
        "connections": count,
        "refused_at_connect": refused,
        "still_open": sum(reply is None for reply in replies),
        "closed": len(closed_at),
        "answered_408": sum(reply is not None and b" 408 " in reply for reply in replies),
        "last_closed_s": round(max(closed_at), 2) if closed_at else None,
    }


async def run_attack(host: str, port: int, count: int, wait_s: float, payload: str = HALF_HEAD
                     ) -> dict[str, Any]:
    """Run the attack in a child process; its figures."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.helpers.slow_clients", host, str(port), str(count), str(wait_s), payload,
        stdout=asyncio.subprocess.PIPE)
    output, _ = await child.communicate()
    figures: dict[str, Any] = json.loads(output)
    return figures


def main() -> None:
    """Command line: HOST PORT COUNT WAIT_S [PAYLOAD]."""
    host, port, count, wait_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    payload = (sys.argv[5] if len(sys.argv) > 5 else HALF_HEAD).encode()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps(asyncio.run(attack(host, port, count, wait_s, payload))), flush=True)


if __name__ == "__main__":
    main()

"""The HTTP server protocol: uvicorn's httptools, with bounds on a request head's size and on every wait.

httptools accepts a request line and headers of any size, buffering and re-joining them as they
arrive: a 64 MiB header took 12.7 s of CPU on the event loop. Here the bytes of the head are counted
as they arrive, before the parser sees them, and past `max_header_bytes` the connection gets a 431
in the API's error shape and is closed. httptools stays (h11 has a bound, but costs more per request:
see docs/security.md for the measurement).

Time is bounded too (uvicorn arms its keep-alive timer only after a response, so a connection that
sent half a head was held for ever: 2,000 of them were all open after 30 s):

- the head must be complete within `head_timeout_s` of the connection's start, or of the previous
  response's end (keep-alive), else 408 and close;
- a body must keep arriving: at least `body_min_bytes_per_s` over each `body_timeout_s` window, not
  counting windows in which the server itself paused reading (the app is slower than the client);
- at most `max_connections` connections: a new one over the bound closes the connection that has
  waited longest for a head, so slow clients push each other out while real requests, whose head
  arrives at once, get through (refusing new connections instead would let slow ones lock out all).

One timer per connection, re-armed when it fires, checks the phase it finds: no timer work per request.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
import weakref
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

END_OF_HEAD = b"\r\n\r\n"
RESERVED_FILES = 512
"""Descriptors kept for everything but client connections: Kafka, Postgres, Redis, the registry, logs."""
WARN_EVERY_S = 10.0
"""Each kind of refusal is logged at most this often: a flood of slow clients must not flood the log."""

log = logging.getLogger(__name__)
# Per server (uvicorn's ServerState): connections waiting for a head, the longest-waiting first.
_waiting_by_server: weakref.WeakKeyDictionary[Any, dict[BoundedHttpToolsProtocol, None]] = (
    weakref.WeakKeyDictionary())
_last_warned: dict[str, float] = {}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools with a bounded head (431), head and body deadlines (408) and a connection bound."""

    max_header_bytes = 32 * 1024
    head_timeout_s = 10.0
    body_timeout_s = 10.0
    body_min_bytes_per_s = 1024
    max_connections = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_tail = b""
        self._in_body = False
        self._body_bytes = 0
        self._window_start = 0.0
        self._window_bytes = 0
        self._head_deadline = 0.0
        self._served = False
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = _waiting_by_server.setdefault(self.server_state, {})

    # --- connection life --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the head deadline; over the connection bound, close the longest-waiting connection."""
        super().connection_made(transport)
        self._head_deadline = self.loop.time() + self.head_timeout_s
        self._timer = self.loop.call_at(self._head_deadline, self._check_deadline)
        self._waiting[self] = None
        if len(self.connections) > self.max_connections:
            # The newcomer is last in line: it goes only when every other connection is mid-request.
            _evict(next(iter(self._waiting)), len(self.connections))

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection and its timer."""
        self._waiting.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    # --- parser callbacks ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Count the head's bytes before parsing them; refuse with 431 once over the bound."""
        if self.transport.is_closing():
            return
        if self._in_head:
            seen = self._head_tail + data
            end = seen.find(END_OF_HEAD)
            counted = len(data) if end < 0 else max(0, end + len(END_OF_HEAD) - len(self._head_tail))
            self._head_bytes += counted
            if self._head_bytes > self.max_header_bytes:
                limit = self.max_header_bytes
                self._refuse(431, "Request Header Fields Too Large", "headers_too_large",
                             f"the request line and headers exceed the limit of {limit} bytes", answer=True)
                return
            self._head_tail = seen[-(len(END_OF_HEAD) - 1):]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """The head is complete: stop counting it, and start timing the body."""
        self._in_head = False
        self._waiting.pop(self, None)
        self._in_body = True
        self._window_start = self.loop.time()
        self._window_bytes = 0
        first_check = self._window_start + self.body_timeout_s
        if self._timer is None or self._timer.when() > first_check:  # rare: only if body < head timeout
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(first_check, self._check_deadline)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """Count the body's progress."""
        self._window_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The request is complete: the next bytes are the next request's head."""
        self._in_body = False
        if self.cycle is not None and self.cycle.response_complete:
            self._wait_for_head()  # answered before its body ended (401 before the body is read)
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._head_tail = b""

    def on_response_complete(self) -> None:
        """A response ended: a keep-alive connection waits for its next head, from now."""
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline and not self._in_body:
            self._wait_for_head()

    def _wait_for_head(self) -> None:
        self._served = True
        self._head_deadline = self.loop.time() + self.head_timeout_s
        self._waiting.pop(self, None)
        self._waiting[self] = None

    # --- deadlines ----------------------------------------------------------------------------------

    def _check_deadline(self) -> None:
        """The connection's one timer: close it if its current wait is over its bound, else re-arm."""
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self._in_body:
            if now - self._window_start >= self.body_timeout_s:
                # Reading paused by the server (the app is slower than the client): not the client's fault.
                if (not self.flow.read_paused
                        and self._window_bytes < self.body_min_bytes_per_s * self.body_timeout_s):
                    self._refuse(408, "Request Timeout", "body_timeout",
                                 f"the request body arrived slower than {self.body_min_bytes_per_s} bytes "
                                 f"per second over {self.body_timeout_s:g} s",
                                 answer=self.cycle is None or not self.cycle.response_started)
                    return
                self._window_start, self._window_bytes = now, 0
            wake = self._window_start + self.body_timeout_s
        elif self.cycle is not None and not self.cycle.response_complete:
            wake = now + self.head_timeout_s  # the app is answering: its time is ours, not the client's
        elif not self._head_bytes and self._served:
            # Idle between requests: uvicorn's keep-alive timer closes it (it stops at the first byte,
            # then this deadline applies). Closing here could race a request already in the socket.
            wake = max(now, self._head_deadline) + self.head_timeout_s
        elif now >= self._head_deadline:
            # A connection that sent nothing at all gets no answer.
            self._refuse(408, "Request Timeout", "head_timeout",
                         f"the request line and headers did not arrive within {self.head_timeout_s:g} s",
                         answer=self._head_bytes > 0)
            return
        else:
            wake = self._head_deadline
        self._timer = self.loop.call_at(wake, self._check_deadline)

    def _refuse(self, status: int, reason: str, code: str, message: str, *, answer: bool) -> None:
        """Answer in the API's error shape (if `answer`) and close the connection."""
        self._waiting.pop(self, None)  # closing: never picked for eviction in the meantime
        if answer:
            error = {"status": status, "code": code, "message": message, "details": []}
            body = orjson.dumps({"error": error})
            self.transport.write(
                f"HTTP/1.1 {status} {reason}\r\n".encode() + b"content-type: application/json\r\n"
                + b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
            )
        self.transport.close()
        _warn(code, f"{message}; connection closed (logged at most every {WARN_EVERY_S:g} s)")


def _evict(protocol: BoundedHttpToolsProtocol, open_connections: int) -> None:
    protocol._waiting.pop(protocol, None)
    protocol.transport.close()
    _warn("max_connections", "connection bound reached: closing the connections that waited longest for a "
          f"head (logged at most every {WARN_EVERY_S:g} s)",
          open_connections=open_connections, max_connections=protocol.max_connections)


def _warn(kind: str, message: str, **extra: Any) -> None:
    now = time.monotonic()
    if now - _last_warned.get(kind, -WARN_EVERY_S) >= WARN_EVERY_S:
        _last_warned[kind] = now
        log.warning(message, extra=extra)


def bounded_protocol(
    max_header_bytes: int = 32 * 1024,
    *,
    head_timeout_s: float = 10.0,
    body_timeout_s: float = 10.0,
    body_min_bytes_per_s: int = 1024,
    max_connections: int = 4096,
) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=` option, with these bounds."""
    return type("BoundedHttpTools", (BoundedHttpToolsProtocol,), {
        "max_header_bytes": max_header_bytes, "head_timeout_s": head_timeout_s,
        "body_timeout_s": body_timeout_s, "body_min_bytes_per_s": body_min_bytes_per_s,
        "max_connections": max_connections,
    })


def raise_open_file_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-file limit", extra={"soft": soft, "hard": hard,
                                                                   "error": str(error)})
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20


def connection_bound(configured: int) -> int:
    """`configured`, lowered (with a warning) to fit the open-file limit once that is raised."""
    files = raise_open_file_limit()
    fitting = max(64, files - RESERVED_FILES)
    if configured > fitting:
        log.warning("STREAMSCORE_MAX_CONNECTIONS lowered to fit the open-file limit",
                    extra={"configured": configured, "open_file_limit": files, "max_connections": fitting})
        return fitting
    return configured

"""The HTTP server protocol: uvicorn's httptools, with a bound on the size of a request's head.

httptools accepts a request line and headers of any size, buffering and re-joining them as they
arrive: a 64 MiB header took 12.7 s of CPU on the event loop. Here the bytes of the head are counted
as they arrive, before the parser sees them, and past `max_header_bytes` the connection gets a 431
in the API's error shape and is closed. httptools stays (h11 has a bound, but costs more per request:
see docs/security.md for the measurement).
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

END_OF_HEAD = b"\r\n\r\n"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools with a head (request line + headers) of at most `max_header_bytes`, else 431."""

    max_header_bytes = 32 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_tail = b""

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
                self._refuse_head()
                return
            self._head_tail = seen[-(len(END_OF_HEAD) - 1):]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """The head is complete: stop counting until the next request begins."""
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request is complete: the next bytes are the next request's head."""
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._head_tail = b""

    def _refuse_head(self) -> None:
        message = f"the request line and headers exceed the limit of {self.max_header_bytes} bytes"
        body = orjson.dumps({"error": {"status": 431, "code": "headers_too_large", "message": message,
                                       "details": []}})
        self.logger.warning("request head too large; connection closed")
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            + b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()


def bounded_protocol(max_header_bytes: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=` option, with this head bound."""
    return type("BoundedHttpTools", (BoundedHttpToolsProtocol,), {"max_header_bytes": max_header_bytes})

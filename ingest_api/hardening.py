"""Response hardening: browser security headers on every answer, and redirects that never name a host.

Starlette builds its trailing-slash redirect from the request's `Host` header, which a client
controls; the Location is cut back to path and query, so a redirect always stays on this server.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
FRAME_ANCESTORS = b"frame-ancestors 'none'"


class SecurityHeadersMiddleware:
    """Adds nosniff, Referrer-Policy and a frame-ancestors CSP; makes redirect Locations relative."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite the response start; the body passes untouched."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def hardened_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _harden(list(message.get("headers", ())), int(message["status"]))
            await send(message)

        await self.app(scope, receive, hardened_send)


def _harden(headers: list[tuple[bytes, bytes]], status: int) -> list[tuple[bytes, bytes]]:
    names = {name.lower() for name, _ in headers}
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-security-policy" and b"frame-ancestors" not in value:
            value = value.rstrip(b"; ") + b"; " + FRAME_ANCESTORS
        elif lowered == b"location" and 300 <= status < 400:
            value = _relative(value)
        out.append((name, value))
    out.extend(header for header in SECURITY_HEADERS if header[0] not in names)
    if b"content-security-policy" not in names:
        out.append((b"content-security-policy", FRAME_ANCESTORS))
    return out


def _relative(location: bytes) -> bytes:
    parts = urlsplit(location.decode("latin-1"))
    path = "/" + parts.path.lstrip("/")  # "//evil.example" must not become a scheme-relative URL
    return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")

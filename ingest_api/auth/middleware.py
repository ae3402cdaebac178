"""Authentication before the body: no request body is read for a caller whose headers do not authenticate.

FastAPI reads and parses a route's JSON body before it runs the route's dependencies, so an anonymous
16 MiB body used to be parsed before its 401. This middleware wraps `receive`: the first attempt to
read the body authenticates from the headers (`ingest_api.auth.dependencies.authenticate`) and raises the
401/429 instead of reading. The principal is kept in the request's scope state, so the route's own
dependency then only rate-limits and checks the scope. Sign-in is exempt: its body is the credential.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest_api.auth.dependencies import PRINCIPAL, authenticate, client_address, credentials_from_headers

if TYPE_CHECKING:
    from fastapi import FastAPI

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


class AuthBeforeBodyMiddleware:
    """Demands valid credentials before the first body byte is read, except on `exempt` paths."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, exempt: frozenset[str]) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Guard `receive` of body-carrying requests; everything else passes untouched."""
        services: Any = getattr(self.fastapi_app.state, "services", None)
        if (
            scope["type"] != "http"
            or scope["method"] in _NO_BODY
            or scope["path"] in self.exempt
            or services is None
            or self.fastapi_app.dependency_overrides  # tests replacing dependencies own auth themselves
        ):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        checked = False

        async def guarded_receive() -> Message:
            nonlocal checked
            if not checked:
                checked = True
                if PRINCIPAL not in state:
                    bearer, api_key = credentials_from_headers(scope["headers"])
                    state[PRINCIPAL] = await authenticate(services, bearer, api_key, client_address(scope))
            return await receive()

        await self.app(scope, guarded_receive, send)

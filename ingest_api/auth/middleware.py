"""One authentication per request: from its headers, before the app runs and before any body byte is read.

The middleware resolves the headers to a `Principal` (`ingest_api.auth.authenticate`), or `ANONYMOUS`
when none are sent, and keeps the outcome (or its 401/429/503) in the request's scope state; the
scope dependencies, the fast path and `/ready` only read it (`principal_of`). FastAPI reads and parses
a route's JSON body before it runs the route's dependencies, so `receive` is guarded too: a request
without a principal gets its refusal instead of its first body byte. Sign-in is exempt: its body is
the credential. On `background` paths (`/ready`) the lookup runs while the route works, so a slow
database cannot hold the answer past the route's own deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest_api.auth.authenticate import (
    MISSING,
    authenticate,
    client_address,
    credentials_from_headers,
    unauthorized,
)
from ingest_api.auth.principals import ANONYMOUS, Principal
from ingest_api.auth.tokens import TOKEN_PATH

if TYPE_CHECKING:
    from fastapi import FastAPI

PRINCIPAL = "streamscore.principal"
"""Key of request.scope["state"]: the principal, ANONYMOUS, the refusal, or (background paths) its task."""
_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


class AuthMiddleware:
    """Authenticates every request but sign-in from its headers; no body reaches an unauthenticated route."""

    def __init__(
        self,
        app: ASGIApp,
        fastapi_app: FastAPI,
        exempt: frozenset[str] = frozenset({TOKEN_PATH}),
        background: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.exempt = exempt
        self.background = background

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Store the request's principal (or refusal), then run the app with `receive` guarded."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        path = scope["path"]
        bearer, api_key = (None, None) if path in self.exempt else credentials_from_headers(scope["headers"])
        if bearer is None and api_key is None:
            state[PRINCIPAL] = ANONYMOUS
        else:
            lookup = authenticate(self.fastapi_app.state.security, bearer, api_key, client_address(scope))
            if path in self.background:
                task = state[PRINCIPAL] = asyncio.ensure_future(lookup)
                task.add_done_callback(_retrieve)
            else:
                try:
                    state[PRINCIPAL] = await lookup
                except Exception as error:  # 401/429, or the database down (503): the reader raises it
                    state[PRINCIPAL] = error
        if scope["method"] in _NO_BODY or path in self.exempt:
            await self.app(scope, receive, send)
            return
        checked = False

        async def guarded_receive() -> Message:
            nonlocal checked
            if not checked:
                await authenticated(state)
                checked = True
            return await receive()

        await self.app(scope, guarded_receive, send)


async def principal_of(state: MutableMapping[str, Any]) -> Principal:
    """The principal the middleware found (ANONYMOUS without credentials); raises its refusal."""
    found = state[PRINCIPAL]
    if isinstance(found, asyncio.Future):
        found = await found
    if isinstance(found, Exception):
        raise found
    principal: Principal = found
    return principal


async def authenticated(state: MutableMapping[str, Any]) -> Principal:
    """The request's principal; its refusal, or 401 when it sent no credentials."""
    principal = await principal_of(state)
    if principal is ANONYMOUS:
        raise unauthorized(MISSING)
    return principal


def _retrieve(task: asyncio.Future[Principal]) -> None:
    # A refusal nobody awaited (the route did not ask) is not an unhandled error.
    if not task.cancelled():
        task.exception()

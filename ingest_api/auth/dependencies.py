"""The scope dependencies: they read the principal the middleware stored, rate-limit it once, check the scope.

Every authenticated request passes the per-principal rate limiter (`ingest_api.auth.rate_limit`) once,
however many readers it has (the fast path and a replayed route, two scope dependencies).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer

from ingest_api.auth.authenticate import too_many
from ingest_api.auth.middleware import authenticated
from ingest_api.auth.principals import Principal, Scope
from ingest_api.auth.state import SecurityState
from ingest_api.auth.tokens import TOKEN_PATH

LIMITED = "streamscore.rate_limited"
"""Key of request.scope["state"]: this request's principal was counted by the rate limiter."""

# Declared on every protected route so the OpenAPI document names both schemes; the middleware reads them.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_PATH, auto_error=False)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)


async def authorize(security: SecurityState, state: MutableMapping[str, Any], scope: str | None) -> Principal:
    """The request's principal, rate-limited once, holding `scope` (None: any principal); 401/429/403."""
    principal = await authenticated(state)
    if not state.get(LIMITED):
        # Kind in the key: a user named "key:x" must not share API key x's budget.
        decision = await security.limiter.hit(f"{principal.kind}:{principal.subject}")
        if not decision.allowed:
            raise too_many("rate limit exceeded", decision.retry_after_s)
        state[LIMITED] = True
    if scope is not None and not principal.allows(scope):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"missing scope '{scope}'")
    return principal


def require_scope(scope: Scope | None) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the request's principal, rate-limited, holding `scope` (None: any principal)."""

    async def dependency(
        request: Request,
        _bearer: Annotated[str | None, Depends(oauth2_scheme)],
        _api_key: Annotated[str | None, Depends(api_key_scheme)],
    ) -> Principal:
        return await authorize(request.app.state.security, request.scope["state"], scope)

    dependency.__name__ = f"require_{scope or 'principal'}"
    return dependency


AnyPrincipal = Annotated[Principal, Depends(require_scope(None))]
PredictPrincipal = Annotated[Principal, Depends(require_scope("predict"))]
EventsPrincipal = Annotated[Principal, Depends(require_scope("events"))]
BatchPrincipal = Annotated[Principal, Depends(require_scope("batch"))]
ReadPrincipal = Annotated[Principal, Depends(require_scope("read"))]
AdminPrincipal = Annotated[Principal, Depends(require_scope("admin"))]

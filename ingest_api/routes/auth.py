"""OAuth2 password flow: `POST /api/v1/auth/token` swaps a username and password for a JWT."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from ingest_api.deps import ServicesDep, SessionDep
from ingest_api.security import (
    CHALLENGE,
    AnyPrincipal,
    authenticate_user,
    enforce_rate_limit,
    get_security,
    issue_token,
)

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class TokenResponse(BaseModel):
    """An OAuth2 bearer token."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class WhoAmI(BaseModel):
    """The caller as the API sees it."""

    subject: str
    kind: str
    scopes: list[str]


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={401: {"description": "Wrong username or password"}, 429: {"description": "Too many attempts"}},
)
async def issue_access_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    services: ServicesDep,
    session: SessionDep,
) -> TokenResponse:
    """Check the password and issue a signed access token for the user's role."""
    security = get_security(services)
    # Per-username budget slows password guessing without touching other users.
    await enforce_rate_limit(security.login_limiter, f"user:{form.username}")
    user = await authenticate_user(session, form.username, form.password)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="wrong username or password", headers=CHALLENGE
        )
    username, role = user
    return TokenResponse(
        access_token=issue_token(security.jwt, username, role), expires_in=security.jwt.ttl_seconds
    )


@router.get("/whoami", response_model=WhoAmI)
async def whoami(principal: AnyPrincipal) -> WhoAmI:
    """Who the presented credentials belong to, and their scopes."""
    return WhoAmI(subject=principal.subject, kind=principal.kind, scopes=sorted(principal.scopes))

"""OAuth2 password flow: `POST /api/v1/auth/token` swaps a username and password for a JWT."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from ingest_api.auth.authenticate import CHALLENGE, client_address, too_many
from ingest_api.auth.credentials import MAX_PASSWORD_CHARS, HasherBusy, authenticate_user, username_problem
from ingest_api.auth.dependencies import AnyPrincipal
from ingest_api.auth.state import SecurityState, get_security
from ingest_api.auth.tokens import TOKEN_PATH, issue_token
from ingest_api.errors import ApiError, ErrorDetail

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
__all__ = ["TOKEN_PATH", "router"]


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
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    security: Annotated[SecurityState, Depends(get_security)],
) -> TokenResponse:
    """Check the password and issue a signed access token for the user's role."""
    if problem := username_problem(form.username):
        raise ApiError(422, f"username {problem}", details=[ErrorDetail(field="username", message=problem)])
    if len(form.password) > MAX_PASSWORD_CHARS:
        message = f"must be at most {MAX_PASSWORD_CHARS} characters"
        raise ApiError(422, f"password {message}", details=[ErrorDetail(field="password", message=message)])
    address = client_address(request.scope)
    refused = security.login.admit(form.username, address)
    if refused is not None:
        raise too_many(*refused)
    recent = security.login.is_recent(form.username, address)
    try:
        async with security.sessionmaker() as session:
            user = await authenticate_user(session, security.hasher, form.username, form.password, recent)
    except HasherBusy as error:
        raise too_many(str(error), 1) from None  # refused before hashing: charged to no budget
    await security.login.hashed(form.username, address)
    if user is None:
        await security.login.failed(form.username, address)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="wrong username or password", headers=CHALLENGE
        )
    security.login.succeeded(form.username, address)
    token = issue_token(security.jwt, user.username, user.role, user.user_id, user.stamp)
    return TokenResponse(access_token=token, expires_in=security.jwt.ttl_seconds)


@router.get("/whoami", response_model=WhoAmI)
async def whoami(principal: AnyPrincipal) -> WhoAmI:
    """Who the presented credentials belong to, and their scopes."""
    return WhoAmI(subject=principal.subject, kind=principal.kind, scopes=sorted(principal.scopes))

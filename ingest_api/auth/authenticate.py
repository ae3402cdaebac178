"""Who a request's headers name: an API key or a bearer JWT resolved to a `Principal`, or a 401/429/503.

- `X-API-Key`: verified keys are cached for `key_cache_ttl_s` (5 s), so a revoked key stops working
  within that TTL; unknown well-formed keys are cached as refusals for the same short time and cost
  one indexed SELECT, never a write. An address whose keys keep failing gets 429 before any lookup.
- Bearer JWTs (`ingest_api.auth.tokens`): a verified token string is cached until min(exp, 60 s); the
  user it names is then checked (the same row id and password stamp, enabled, current role) through a
  cache of `key_cache_ttl_s`.
- Through a database outage a key or user verified within `auth_outage_grace_s` keeps working, with
  a warning; anything not seen in that time gets the outage's 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from fastapi import HTTPException, status
from fastapi.security.utils import get_authorization_scheme_param

from infra.database import DATABASE_DOWN
from ingest_api.auth.credentials import hash_api_key, is_well_formed_key, password_stamp, username_problem
from ingest_api.auth.principals import ROLE_SCOPES, Principal
from ingest_api.auth.state import SecurityState
from ingest_api.auth.tokens import InvalidToken, TokenClaims, decode_token
from store import users

log = logging.getLogger(__name__)

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="streamscore", ApiKey realm="streamscore"'}
BAD_KEY = "invalid or revoked API key"
MISSING = "missing credentials: send a bearer token (Authorization) or an API key (X-API-Key)"


def client_address(scope: MutableMapping[str, Any]) -> str:
    """The peer address of a request (the direct peer: no proxy header is trusted)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def credentials_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """(bearer token, API key) from raw ASGI headers, read as FastAPI's security schemes read them."""
    authorization = api_key = None
    for name, value in headers:
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
    scheme, token = get_authorization_scheme_param(authorization)
    return (token if authorization and scheme.lower() == "bearer" else None), (api_key or None)


async def authenticate(
    security: SecurityState, bearer: str | None, api_key: str | None, address: str = "unknown"
) -> Principal:
    """The caller's principal from an API key (preferred if sent) or a bearer token; 401 otherwise."""
    if api_key:
        return await _principal_for_key(security, api_key, address)
    if bearer:
        claims = security.tokens.get(bearer)
        if claims is None:
            try:
                claims = decode_token(security.jwt, bearer)
            except InvalidToken as error:
                raise unauthorized(error.reason) from None
            security.tokens.put(bearer, claims, ttl_s=claims.expires_at - time.time())
        return await _current_user(security, claims)
    raise unauthorized(MISSING)


async def _principal_for_key(security: SecurityState, api_key: str, address: str) -> Principal:
    key_hash = hash_api_key(api_key)
    found, cached = security.keys.lookup(key_hash)
    if found:
        if cached is None:
            raise unauthorized(BAD_KEY)
        return cached
    if not is_well_formed_key(api_key):
        raise unauthorized(BAD_KEY)  # malformed: spare the database
    refused = security.auth_failures.peek(address)
    if not refused.allowed:
        raise too_many("too many failed authentications from this address", refused.retry_after_s)
    principal = await _verified(security, f"key:{key_hash}", _lookup_key, key_hash)
    security.keys.put(key_hash, principal)
    if principal is None:
        await security.auth_failures.hit(address)
        raise unauthorized(BAD_KEY)
    return principal


async def _current_user(security: SecurityState, claims: TokenClaims) -> Principal:
    # The user row and password the token was issued for: a recycled name or a new password voids it.
    if username_problem(claims.subject) is not None:
        raise unauthorized("invalid token")
    key = f"{claims.subject}\x00{claims.user_id}\x00{claims.stamp}"  # no control character in a name
    found, principal = security.users.lookup(key)
    if not found:
        principal = await _verified(security, f"user:{key}", _lookup_user, key)
        security.users.put(key, principal)
    if principal is None:
        raise unauthorized("the token's user is disabled, has a new password or no longer exists")
    return principal


async def _verified(
    security: SecurityState,
    name: str,
    lookup: Callable[[SecurityState, str], Awaitable[Principal | None]],
    argument: str,
) -> Principal | None:
    """One database lookup per credential at a time (single flight), with the outage grace around it."""
    future = security.lookups.get(name)
    if future is None:
        future = asyncio.ensure_future(lookup(security, argument))
        security.lookups[name] = future
        future.add_done_callback(lambda _: security.lookups.pop(name, None))
    try:
        principal = await asyncio.shield(future)
    except DATABASE_DOWN:
        recent = security.recent.get(name)
        if recent is None:
            raise
        if not security.outage_logged:
            security.outage_logged = True
            log.warning("database unavailable: serving credentials verified in the last "
                        f"{security.recent.ttl_s:.0f} s from memory")
        return recent
    security.outage_logged = False
    if principal is None:
        security.recent.pop(name)
    else:
        security.recent.put(name, principal)
    return principal


async def _lookup_key(security: SecurityState, key_hash: str) -> Principal | None:
    async with security.sessionmaker() as session:
        found = await users.use_active_key(session, key_hash)
        await session.commit()
    if found is None:
        return None
    name, scopes = found
    return Principal(subject=f"key:{name}", kind="api_key", scopes=frozenset(scopes))


async def _lookup_user(security: SecurityState, key: str) -> Principal | None:
    username, user_id, stamp = key.split("\x00")
    async with security.sessionmaker() as session:
        user = await users.get_user(session, username)
    if (user is None or user.disabled or user.role not in ROLE_SCOPES or str(user.id) != user_id
            or password_stamp(user.password_hash) != stamp):
        return None
    # The user's role now, not the one in the token: a demotion applies within the cache TTL.
    return Principal(subject=user.username, kind="user", scopes=ROLE_SCOPES[user.role])


def unauthorized(reason: str) -> HTTPException:
    """A 401 with the authentication challenge."""
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=reason, headers=CHALLENGE)


def too_many(reason: str, retry_after_s: int) -> HTTPException:
    """A 429 with Retry-After."""
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=reason,
                         headers={"Retry-After": str(retry_after_s)})

"""FastAPI security dependencies: the per-process security state, authentication and scope checks.

- `X-API-Key`: verified keys are cached for `key_cache_ttl_s` (5 s), so a revoked key stops working
  within that TTL; unknown well-formed keys are cached as refusals for the same short time and cost
  one indexed SELECT, never a write. An address whose keys keep failing gets 429 before any lookup.
- Bearer JWTs (`ingest_api.auth.tokens`): a verified token string is cached until min(exp, 60 s); the user
  it names is then checked (the same row id and password stamp, enabled, current role) through a
  cache of `key_cache_ttl_s`.
- Through a database outage a key or user verified within `auth_outage_grace_s` keeps working, with
  a warning; anything not seen in that time gets the outage's 503.
- Every authenticated request then passes the per-principal rate limiter (`ingest_api.auth.rate_limit`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from fastapi.security.utils import get_authorization_scheme_param
from redis.asyncio import Redis

from infra.database import DATABASE_DOWN
from ingest_api.auth.credentials import (
    PasswordHasher,
    hash_api_key,
    is_well_formed_key,
    password_stamp,
    username_problem,
)
from ingest_api.auth.login_guard import LoginGuard
from ingest_api.auth.principals import ROLE_SCOPES, Principal, Scope, TtlCache
from ingest_api.auth.rate_limit import RateLimiter
from ingest_api.auth.tokens import InvalidToken, JwtConfig, TokenClaims, build_jwt_config, decode_token
from ingest_api.deps import Services, ServicesDep
from ingest_api.settings import ApiSettings
from store import users

log = logging.getLogger(__name__)

TOKEN_CACHE_TTL_S = 60.0
AUTH_FAILURES_PER_MINUTE = 120  # failed key lookups per client address, then 429 until the next minute
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="streamscore", ApiKey realm="streamscore"'}
BAD_KEY = "invalid or revoked API key"
# Keys of request.scope["state"]: the principal once authenticated, and whether it was rate-limited.
PRINCIPAL = "streamscore.principal"
LIMITED = "streamscore.rate_limited"

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)


@dataclass
class SecurityState:
    """Per-process security objects, built once in the API lifespan."""

    jwt: JwtConfig
    keys: TtlCache[Principal]
    tokens: TtlCache[TokenClaims]
    users: TtlCache[Principal]
    recent: TtlCache[Principal]  # last verified keys and users, served through a database outage
    limiter: RateLimiter
    login: LoginGuard
    auth_failures: RateLimiter
    hasher: PasswordHasher
    lookups: dict[str, asyncio.Future[Principal | None]] = field(default_factory=dict)
    outage_logged: bool = False

    def close(self) -> None:
        """Stop the password-hashing pool."""
        self.hasher.close()


def build_security(
    settings: ApiSettings, redis: Redis | None, *, key_cache_ttl_s: float = 5.0
) -> SecurityState:
    """Everything the security dependencies need; call from the lifespan so bad settings stop start-up."""
    limits_on = settings.rate_limit > 0
    return SecurityState(
        jwt=build_jwt_config(settings),
        keys=TtlCache(ttl_s=key_cache_ttl_s),
        tokens=TtlCache(ttl_s=TOKEN_CACHE_TTL_S),
        users=TtlCache(ttl_s=key_cache_ttl_s),
        recent=TtlCache(ttl_s=settings.auth_outage_grace_s),
        limiter=RateLimiter(redis, settings.rate_limit),
        login=LoginGuard(settings, redis),
        # Local on purpose: it protects this process's database pool, and needs no round trip.
        auth_failures=RateLimiter(None, AUTH_FAILURES_PER_MINUTE if limits_on else 0),
        # A quarter of the queue's places wait only for recent users (none below a queue of 4).
        hasher=PasswordHasher(settings.login_hash_workers, settings.login_hash_queue,
                              reserved=settings.login_hash_queue // 4 if limits_on else 0),
    )


def get_security(services: Services) -> SecurityState:
    """The process's security state; built on first use if the lifespan did not build it."""
    if services.security is None:
        services.security = build_security(services.settings, services.redis)
    return services.security


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
    services: Services, bearer: str | None, api_key: str | None, address: str = "unknown"
) -> Principal:
    """The caller's principal from an API key (preferred if sent) or a bearer token; 401 otherwise."""
    security = get_security(services)
    if api_key:
        return await _principal_for_key(services, security, api_key, address)
    if bearer:
        claims = security.tokens.get(bearer)
        if claims is None:
            try:
                claims = decode_token(security.jwt, bearer)
            except InvalidToken as error:
                raise unauthorized(error.reason) from None
            security.tokens.put(bearer, claims, ttl_s=claims.expires_at - time.time())
        return await _current_user(services, security, claims)
    raise unauthorized("missing credentials: send a bearer token (Authorization) or an API key (X-API-Key)")


async def _principal_for_key(
    services: Services, security: SecurityState, api_key: str, address: str
) -> Principal:
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
    principal = await _verified(services, security, f"key:{key_hash}", _lookup_key, key_hash)
    security.keys.put(key_hash, principal)
    if principal is None:
        await security.auth_failures.hit(address)
        raise unauthorized(BAD_KEY)
    return principal


async def _current_user(services: Services, security: SecurityState, claims: TokenClaims) -> Principal:
    # The user row and password the token was issued for: a recycled name or a new password voids it.
    if username_problem(claims.subject) is not None:
        raise unauthorized("invalid token")
    key = f"{claims.subject}\x00{claims.user_id}\x00{claims.stamp}"  # no control character in a name
    found, principal = security.users.lookup(key)
    if not found:
        principal = await _verified(services, security, f"user:{key}", _lookup_user, key)
        security.users.put(key, principal)
    if principal is None:
        raise unauthorized("the token's user is disabled, has a new password or no longer exists")
    return principal


async def _verified(
    services: Services,
    security: SecurityState,
    name: str,
    lookup: Callable[[Services, str], Awaitable[Principal | None]],
    argument: str,
) -> Principal | None:
    """One database lookup per credential at a time (single flight), with the outage grace around it."""
    future = security.lookups.get(name)
    if future is None:
        future = asyncio.ensure_future(lookup(services, argument))
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


async def _lookup_key(services: Services, key_hash: str) -> Principal | None:
    async with services.sessionmaker() as session:
        found = await users.use_active_key(session, key_hash)
        await session.commit()
    if found is None:
        return None
    name, scopes = found
    return Principal(subject=f"key:{name}", kind="api_key", scopes=frozenset(scopes))


async def _lookup_user(services: Services, key: str) -> Principal | None:
    username, user_id, stamp = key.split("\x00")
    async with services.sessionmaker() as session:
        user = await users.get_user(session, username)
    if (user is None or user.disabled or user.role not in ROLE_SCOPES or str(user.id) != user_id
            or password_stamp(user.password_hash) != stamp):
        return None
    # The user's role now, not the one in the token: a demotion applies within the cache TTL.
    return Principal(subject=user.username, kind="user", scopes=ROLE_SCOPES[user.role])


async def enforce_rate_limit(limiter: RateLimiter, subject: str) -> None:
    """Raise 429 with Retry-After when `subject` is over its per-minute budget."""
    decision = await limiter.hit(subject)
    if not decision.allowed:
        raise too_many("rate limit exceeded", decision.retry_after_s)


async def authorize(
    services: Services,
    bearer: str | None,
    api_key: str | None,
    scope: str | None,
    address: str = "unknown",
    state: MutableMapping[str, Any] | None = None,
) -> Principal:
    """Authenticate, rate-limit, then demand `scope` (None: any principal); 401/429/403 as HTTPException.

    `state` (the request's scope state) carries what was already done for this request, so a principal
    authenticated before the body was read is neither looked up nor counted twice.
    """
    principal = state.get(PRINCIPAL) if state is not None else None
    if principal is None:
        principal = await authenticate(services, bearer, api_key, address)
        if state is not None:
            state[PRINCIPAL] = principal
    if state is None or not state.get(LIMITED):
        # Kind in the key: a user named "key:x" must not share API key x's budget.
        await enforce_rate_limit(get_security(services).limiter, f"{principal.kind}:{principal.subject}")
        if state is not None:
            state[LIMITED] = True
    if scope is not None and not principal.allows(scope):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"missing scope '{scope}'")
    return principal


def require_scope(scope: Scope | None) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: authenticate, rate-limit, then demand `scope` (None: any principal)."""

    async def dependency(
        request: Request,
        services: ServicesDep,
        bearer: Annotated[str | None, Depends(oauth2_scheme)],
        api_key: Annotated[str | None, Depends(api_key_scheme)],
    ) -> Principal:
        return await authorize(services, bearer, api_key, scope, client_address(request.scope),
                               request.scope.setdefault("state", {}))

    dependency.__name__ = f"require_{scope or 'principal'}"
    return dependency


def unauthorized(reason: str) -> HTTPException:
    """A 401 with the authentication challenge."""
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=reason, headers=CHALLENGE)


def too_many(reason: str, retry_after_s: int) -> HTTPException:
    """A 429 with Retry-After."""
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=reason,
                         headers={"Retry-After": str(retry_after_s)})


AnyPrincipal = Annotated[Principal, Depends(require_scope(None))]
PredictPrincipal = Annotated[Principal, Depends(require_scope("predict"))]
EventsPrincipal = Annotated[Principal, Depends(require_scope("events"))]
BatchPrincipal = Annotated[Principal, Depends(require_scope("batch"))]
ReadPrincipal = Annotated[Principal, Depends(require_scope("read"))]
AdminPrincipal = Annotated[Principal, Depends(require_scope("admin"))]

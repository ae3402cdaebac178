"""The per-process security state: caches, budgets and the password pool, built once in the lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingest_api.auth.credentials import PasswordHasher
from ingest_api.auth.login_guard import LoginGuard
from ingest_api.auth.principals import Principal, TtlCache
from ingest_api.auth.rate_limit import RateLimiter
from ingest_api.auth.tokens import JwtConfig, TokenClaims, build_jwt_config
from ingest_api.settings import ApiSettings

TOKEN_CACHE_TTL_S = 60.0
AUTH_FAILURES_PER_MINUTE = 120  # failed key lookups per client address, then 429 until the next minute


@dataclass
class SecurityState:
    """Per-process security objects, built once in the API lifespan (`app.state.security`)."""

    sessionmaker: async_sessionmaker[AsyncSession]
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
    settings: ApiSettings,
    redis: Redis | None,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    key_cache_ttl_s: float = 5.0,
) -> SecurityState:
    """Everything authentication needs; built in the lifespan, so bad settings stop start-up."""
    limits_on = settings.rate_limit > 0
    return SecurityState(
        sessionmaker=sessionmaker,
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


async def get_security(request: Request) -> SecurityState:
    """The process's security state (a dependency; async def: a sync one would cost a thread hop)."""
    security: SecurityState = request.app.state.security
    return security

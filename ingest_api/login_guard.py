"""Sign-in budgets, all checked before a password is hashed (argon2 is the API's costliest work).

- per client address and for the whole process (local counters: they protect this process's CPU);
- failures per (username, address), shared through Redis: a client guessing one user's password is
  stopped, while the same user signing in from elsewhere is not locked out by that client.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from ingest_api.rate_limit import RateDecision, RateLimiter
from ingest_api.settings import ApiSettings


class LoginGuard:
    """Decides whether a sign-in attempt may reach the password check; `rate_limit=0` turns it off."""

    def __init__(self, settings: ApiSettings, redis: Redis | None) -> None:
        on = settings.rate_limit > 0
        self.per_address = RateLimiter(None, settings.login_per_address_per_minute if on else 0)
        self.overall = RateLimiter(None, settings.login_global_per_minute if on else 0)
        self.failures = RateLimiter(
            redis, settings.login_failures_per_minute if on else 0, namespace="streamscore:rl-login"
        )

    async def admit(self, username: str, address: str) -> tuple[str, int] | None:
        """None if the attempt may proceed, else (reason, retry-after seconds); counts the attempt."""
        decision = self.failures.peek(_pair(username, address))
        if not decision.allowed:
            return "too many failed sign-ins for this username from this address", decision.retry_after_s
        checks: tuple[tuple[RateLimiter, str, str], ...] = (
            (self.per_address, address, "too many sign-in attempts from this address"),
            (self.overall, "all", "too many sign-in attempts; the server is busy"),
        )
        for limiter, subject, reason in checks:
            result: RateDecision = await limiter.hit(subject)
            if not result.allowed:
                return reason, result.retry_after_s
        return None

    async def failed(self, username: str, address: str) -> None:
        """Count a wrong password for (username, address)."""
        await self.failures.hit(_pair(username, address))


def _pair(username: str, address: str) -> str:
    # Hashed: the Redis key stays short whatever the username (it is also capped at 64 characters).
    return f"pair:{hashlib.sha256(username.encode()).hexdigest()[:32]}:{address}"

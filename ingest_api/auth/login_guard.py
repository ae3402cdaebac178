"""Sign-in budgets: checked before a password is hashed, charged only for attempts that were hashed.

- per client address, and for the whole process (local counters: they protect this process's CPU);
  an attempt refused before the hasher (a budget, or the hasher's queue full) costs nothing and is not
  counted, so refusals cannot use up the budget;
- `login_recent_share` of the process-wide budget is kept for users who signed in recently from the
  same address: a spray from many addresses cannot lock them out (it used to: 186 anonymous attempts
  locked every user out for the rest of the minute);
- failures per (username, address), shared through Redis: a client guessing one user's password is
  stopped, while the same user signing in from elsewhere is not locked out by that client.

Budgets are peeked before the hash and charged after it, so concurrent attempts can pass a budget
by at most the hasher's queue (`login_hash_queue` + workers).
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from ingest_api.auth.principals import TtlCache
from ingest_api.auth.rate_limit import RateLimiter
from ingest_api.settings import ApiSettings

ALL = "all"


class LoginGuard:
    """Decides whether a sign-in attempt may reach the password check; `rate_limit=0` turns it off."""

    def __init__(self, settings: ApiSettings, redis: Redis | None) -> None:
        on = settings.rate_limit > 0
        total = settings.login_global_per_minute if on else 0
        self.per_address = RateLimiter(None, settings.login_per_address_per_minute if on else 0)
        self.overall = RateLimiter(None, total)
        # Users without a recent sign-in share what the recent ones leave (at least one attempt).
        general = max(1, round(total * (1 - settings.login_recent_share))) if on else 0
        self.general = RateLimiter(None, general)
        self.failures = RateLimiter(
            redis, settings.login_failures_per_minute if on else 0, namespace="streamscore:rl-login"
        )
        self.recent: TtlCache[bool] = TtlCache(ttl_s=settings.login_recent_s, max_entries=100_000)

    def is_recent(self, username: str, address: str) -> bool:
        """True if `username` signed in successfully from `address` within `login_recent_s`."""
        return self.recent.get(_pair(username, address)) is True

    def admit(self, username: str, address: str) -> tuple[str, int] | None:
        """None if the attempt may reach the hasher, else (reason, retry-after seconds); counts nothing."""
        pair = _pair(username, address)
        checks = (
            (self.failures, pair, "too many failed sign-ins for this username from this address"),
            (self.per_address, address, "too many sign-in attempts from this address"),
            (self.overall if self.recent.get(pair) is True else self.general, ALL,
             "too many sign-in attempts; the server is busy"),
        )
        for limiter, subject, reason in checks:
            decision = limiter.peek(subject)
            if not decision.allowed:
                return reason, decision.retry_after_s
        return None

    async def hashed(self, username: str, address: str) -> None:
        """Charge an attempt whose password was hashed to the address and process budgets."""
        await self.per_address.hit(address)
        await self.overall.hit(ALL)
        if not self.is_recent(username, address):
            await self.general.hit(ALL)

    async def failed(self, username: str, address: str) -> None:
        """Count a wrong password for (username, address)."""
        await self.failures.hit(_pair(username, address))

    def succeeded(self, username: str, address: str) -> None:
        """Remember a correct password: this (username, address) now draws on the kept share."""
        self.recent.put(_pair(username, address), True)


def _pair(username: str, address: str) -> str:
    # Hashed: the Redis key stays short whatever the username (it is also capped at 64 characters).
    return f"pair:{hashlib.sha256(username.encode()).hexdigest()[:32]}:{address}"

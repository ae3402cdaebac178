"""Per-principal rate limiting: a Redis fixed window, counted locally and synced in batches.

Design (measured, see docs/security.md): each process counts hits per principal for the current
60-second window and adds them to the shared Redis counter (`INCRBY` + `EXPIRE` in one pipeline)
at most once per `sync_interval_s` per principal, reading back the global total. A request is
refused when `global total + hits not yet synced` would exceed the limit, so a single process is
exact and N processes overshoot by at most the hits they take inside one sync interval. One
Redis round trip per request (the naive design) costs more than the rest of authentication put
together at 2,000+ req/s; batching makes it ~1 round trip per 50 ms per principal.

When Redis is unavailable the limiter FAILS OPEN to its local counts: every process still
enforces the full limit on its own traffic, a warning is logged once per outage, and Redis is
retried after `retry_after_failure_s`. Why: the limit protects capacity, not billing, and
authentication still applies, so losing scoring because the limiter's store is down is worse
than a temporary N-fold limit across N processes. Unsynced hits are pushed on recovery.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class RateDecision:
    """Outcome of one hit: allowed or not, and when the window resets."""

    allowed: bool
    retry_after_s: int


@dataclass
class _Window:
    """One principal's counts in the current window within this process."""

    index: int
    synced_total: int = 0
    unsynced: int = 0
    last_sync: float = field(default=-math.inf)
    syncing: bool = False


class RateLimiter:
    """Fixed-window limiter of `limit` hits per minute per subject; 0 disables it."""

    def __init__(
        self,
        redis: Redis | None,
        limit: int,
        *,
        namespace: str = "streamscore:rl",
        sync_interval_s: float = 0.05,
        redis_timeout_s: float = 0.1,
        retry_after_failure_s: float = 1.0,
    ) -> None:
        self.redis = redis
        self.limit = limit
        self.namespace = namespace
        self.sync_interval_s = sync_interval_s
        self.redis_timeout_s = redis_timeout_s
        self.retry_after_failure_s = retry_after_failure_s
        self._windows: dict[str, _Window] = {}
        self._pruned_index = -1
        self._redis_down_until = -math.inf
        self._redis_failed = False

    @property
    def redis_healthy(self) -> bool:
        """False while the limiter is running on local counts after a Redis failure."""
        return not self._redis_failed

    async def hit(self, subject: str) -> RateDecision:
        """Count one request by `subject` and say whether it may proceed."""
        if self.limit <= 0:
            return RateDecision(True, 0)
        now = time.time()
        index = int(now // WINDOW_SECONDS)
        retry_after = max(1, math.ceil((index + 1) * WINDOW_SECONDS - now))
        window = self._window(subject, index)
        if window.synced_total + window.unsynced >= self.limit:
            return RateDecision(False, retry_after)
        window.unsynced += 1
        monotonic = time.monotonic()
        if (
            not window.syncing
            and monotonic - window.last_sync >= self.sync_interval_s
            and monotonic >= self._redis_down_until
        ):
            await self._sync(subject, window)
        allowed = window.synced_total + window.unsynced <= self.limit
        return RateDecision(allowed, 0 if allowed else retry_after)

    def peek(self, subject: str) -> RateDecision:
        """Whether `subject` still has budget, without counting a hit (e.g. before costly work)."""
        if self.limit <= 0:
            return RateDecision(True, 0)
        now = time.time()
        index = int(now // WINDOW_SECONDS)
        window = self._window(subject, index)
        if window.synced_total + window.unsynced >= self.limit:
            return RateDecision(False, max(1, math.ceil((index + 1) * WINDOW_SECONDS - now)))
        return RateDecision(True, 0)

    async def flush(self) -> None:
        """Push every unsynced count to Redis now (shutdown, tests)."""
        for subject, window in list(self._windows.items()):
            if window.unsynced and not window.syncing:
                await self._sync(subject, window)

    def _window(self, subject: str, index: int) -> _Window:
        if index != self._pruned_index:
            self._windows = {s: w for s, w in self._windows.items() if w.index == index}
            self._pruned_index = index
        window = self._windows.get(subject)
        if window is None or window.index != index:
            window = self._windows[subject] = _Window(index)
        return window

    async def _sync(self, subject: str, window: _Window) -> None:
        if self.redis is None:
            return
        pending = window.unsynced
        window.syncing = True
        window.last_sync = time.monotonic()
        key = f"{self.namespace}:{subject}:{window.index}"
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incrby(key, pending)
                pipe.expire(key, 2 * WINDOW_SECONDS)
                total, _ = await asyncio.wait_for(pipe.execute(), self.redis_timeout_s)
        except (RedisError, OSError, TimeoutError) as error:
            self._on_redis_failure(error)
        else:
            window.unsynced -= pending
            window.synced_total = max(window.synced_total, int(total))
            if self._redis_failed:
                self._redis_failed = False
                log.warning("rate limiter: Redis is back; shared counting resumed")
        finally:
            window.syncing = False

    def _on_redis_failure(self, error: BaseException) -> None:
        self._redis_down_until = time.monotonic() + self.retry_after_failure_s
        if not self._redis_failed:
            self._redis_failed = True
            log.warning(
                "rate limiter: Redis unavailable, failing open to per-process limits",
                extra={"error": repr(error)},
            )

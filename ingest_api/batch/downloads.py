"""Streamed downloads cost what they stream: a bound on concurrent ones, and a rate-limit hit per page.

One 20,000-row results download cost 0.44 s of CPU for one counted request, and three reader
connections took the API to 100 % CPU. A download now takes a slot (at most `per_principal` per
principal and `per_process` in all; else 429 before anything is read) for as long as its response
runs, and each page streamed after the first is charged to the principal's rate limit, so a principal
that downloads a lot runs out of budget for its next requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ingest_api.auth.authenticate import too_many
from ingest_api.auth.rate_limit import RateLimiter


class DownloadSlots:
    """Concurrent streamed downloads of this process, per principal and in all."""

    def __init__(self, per_principal: int, per_process: int) -> None:
        self.per_principal = per_principal
        self.per_process = per_process
        self._by_subject: dict[str, int] = {}
        self._total = 0

    def acquire(self, subject: str) -> Callable[[], None]:
        """Take a slot for `subject` (429 when none is free); returns its release, safe to call once."""
        if self._by_subject.get(subject, 0) >= self.per_principal:
            raise too_many(f"at most {self.per_principal} downloads at a time per credential", 1)
        if self._total >= self.per_process:
            raise too_many("too many downloads are running; retry shortly", 1)
        self._by_subject[subject] = self._by_subject.get(subject, 0) + 1
        self._total += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._total -= 1
            left = self._by_subject[subject] - 1
            if left:
                self._by_subject[subject] = left
            else:
                del self._by_subject[subject]

        return release

    def in_use(self) -> int:
        """Slots taken now."""
        return self._total


async def charged(pages: AsyncIterator[bytes], limiter: RateLimiter, subject: str) -> AsyncIterator[bytes]:
    """`pages`, with every page after the first counted as one request of `subject`."""
    first = True
    async for page in pages:
        if not first:
            await limiter.hit(subject)
        first = False
        yield page


class SlotResponse(StreamingResponse):
    """A streaming response that gives its download slot back however it ends (even if never started)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream, then release the slot."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()

"""A dependency's up/down state, logged once per change: one ERROR when it goes, a WARNING summary every
`summary_s` while it stays down, one INFO with the count and the duration when it is back."""

from __future__ import annotations

import logging
import time


class ConnectionState:
    """Outages of one dependency, for logs and readiness (not one line per failed retry)."""

    def __init__(self, name: str, logger: logging.Logger, summary_s: float = 60.0) -> None:
        self.name = name
        self.summary_s = summary_s
        self._log = logger
        self.up = True
        self.failures = 0
        self.reason = ""
        self._down_since = 0.0
        self._next_summary = 0.0

    @property
    def down_for_s(self) -> float:
        """Seconds since the current outage began (0 while up)."""
        return 0.0 if self.up else time.monotonic() - self._down_since

    def failed(self, reason: str) -> None:
        """Note one failed attempt; logs only at the change and in the periodic summary."""
        now = time.monotonic()
        self.failures += 1
        self.reason = reason
        if self.up:
            self.up = False
            self._down_since = now
            self._next_summary = now + self.summary_s
            self._log.error(f"{self.name} unavailable: {reason}", extra={"dependency": self.name})
        elif now >= self._next_summary:
            self._next_summary = now + self.summary_s
            self._log.warning(f"{self.name} still unavailable: {reason}", extra={
                "dependency": self.name, "failures": self.failures,
                "down_s": round(now - self._down_since, 1)})

    def succeeded(self) -> None:
        """Note a successful attempt; after an outage, logs how many attempts failed and for how long."""
        if not self.up:
            self._log.info(f"{self.name} available again", extra={
                "dependency": self.name, "failures": self.failures, "down_s": round(self.down_for_s, 1)})
        self.up, self.failures, self.reason = True, 0, ""

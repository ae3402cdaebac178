"""The dead-letter redrive contract: the header that counts redrives, and its reading and writing."""

from __future__ import annotations

from collections.abc import Iterable

REDRIVE_HEADER = "streamscore-redrive-count"
"""Kafka header on a redriven record: how many times it was redriven (ASCII decimal)."""
REDRIVE_MAX_DEFAULT = 3
"""Redrives after which a record that fails again is quarantined instead of redriven."""


def redrive_count(headers: Iterable[tuple[str, bytes | None]] | None) -> int:
    """The redrive count a record's headers carry: 0 when absent or unreadable (the last one wins)."""
    count = 0
    for name, value in headers or ():
        if name == REDRIVE_HEADER and value is not None:
            try:
                count = max(int(value.decode("ascii")), 0)
            except (UnicodeDecodeError, ValueError):
                count = 0
    return count


def redrive_headers(count: int) -> list[tuple[str, bytes]]:
    """The headers of a record redriven for the `count`-th time."""
    return [(REDRIVE_HEADER, str(count).encode("ascii"))]

"""How the CLI words counts: "1 row", "3 rows", "1,234 rows"."""

from __future__ import annotations


def counted(count: object, noun: str) -> str:
    """`count` and `noun`, plural unless the count is exactly 1; a count that is not a number stays as is."""
    if isinstance(count, int) and not isinstance(count, bool):
        return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
    return f"{count} {noun}s"

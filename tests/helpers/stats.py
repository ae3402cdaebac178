"""A private Redis database for tests that write or read the stats:scorer:* hashes."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

STATS_DB = 9
"""Dashboard tests elsewhere count the stats hashes of the shared database; these tests use their own."""


def private_db(url: str) -> str:
    """The same Redis server, database STATS_DB."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{STATS_DB}"))

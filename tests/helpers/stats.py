"""A private Redis database for tests that write or read the stats:scorer:* hashes."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

STATS_DB = 9
"""Dashboard tests elsewhere count the stats hashes of the shared database; these tests use their own."""


DASHBOARD_DB = 10
"""The dashboard's shadow and drift panels: a stack whose scorer alone writes stats hashes there."""


def private_db(url: str, db: int = STATS_DB) -> str:
    """The same Redis server, database `db` (STATS_DB by default)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


MALFORMED_DB = 11
"""Stats hashes a broken writer left behind: kept apart from every other test's readers."""

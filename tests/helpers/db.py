"""Paths and database helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from models.data import resolve_data_path

REPO_ROOT = Path(__file__).resolve().parents[2]


DATA_DIR = resolve_data_path().parent


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The plain libpq DSN of a SQLAlchemy URL, for asyncpg.connect."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)



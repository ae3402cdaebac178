"""Paths and database helpers shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from migrations.runner import upgrade_head
from models.data import resolve_data_path

REPO_ROOT = Path(__file__).resolve().parents[2]


DATA_DIR = resolve_data_path().parent


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The plain libpq DSN of a SQLAlchemy URL, for asyncpg.connect."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)




@contextlib.asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """A new, migrated database on the server of `admin_url` (its URL), dropped on exit."""
    name = f"ss_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade_head, url)
        yield url
    finally:
        admin = await asyncpg.connect(asyncpg_dsn(admin_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

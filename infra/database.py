"""Async SQLAlchemy engine and session factory, built in a service's lifespan (never at import)."""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from infra.settings import DatabaseSettings

# What "Postgres is unreachable" looks like from SQLAlchemy + asyncpg: refused or dropped connections,
# a pool that cannot hand out a connection in time. Query errors (bad SQL, constraints) are not in it.
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, PoolTimeout, OSError, TimeoutError,
)


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """An asyncpg engine with a bounded pool and pre-ping, so a restarted Postgres is survived."""
    return create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that never expire on commit; the boundary (request or batch) commits."""
    return async_sessionmaker(engine, expire_on_commit=False)

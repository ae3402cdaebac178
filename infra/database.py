"""Async SQLAlchemy engine and session factory, built in a service's lifespan (never at import)."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
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
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
    )
    event.listen(engine.sync_engine, "handle_error", _lost_connection_as_operational)
    return engine


def _lost_connection_as_operational(context: ExceptionContext) -> BaseException | None:
    """A statement that found its connection gone raises an OperationalError, so DATABASE_DOWN covers it.

    A backend terminated between two statements of one session reaches SQLAlchemy as asyncpg's
    InternalClientError (a half-consumed FATAL message) or a bare driver error: SQLAlchemy flags it as a
    disconnect but raises an InternalError or a plain DBAPIError, which every `except DATABASE_DOWN` and
    the API's 503 handler would miss. Pre-ping failures are left alone: the pool reconnects on those.
    """
    error = context.sqlalchemy_exception
    if (not context.is_disconnect or context.is_pre_ping or error is None
            or isinstance(error, (OperationalError, InterfaceError))):
        return None
    return OperationalError(context.statement, context.parameters, context.original_exception,
                            connection_invalidated=True)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that never expire on commit; the boundary (request or batch) commits."""
    return async_sessionmaker(engine, expire_on_commit=False)

"""COPY through an ORM session's connection, raising the error types of SQLAlchemy statements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession


async def copy_records(
    session: AsyncSession,
    table: str,
    records: Sequence[tuple[Any, ...]],
    columns: Sequence[str] | None = None,
) -> None:
    """COPY records into a table inside the session's transaction, raising SQLAlchemy's error types.

    asyncpg's COPY bypasses SQLAlchemy's cursor, so its errors are translated here into what a statement
    would raise: the data itself -> DataError or IntegrityError (a rejected row), anything else the driver
    or the server reports -> OperationalError (Postgres unreachable: retried). That includes asyncpg's
    InternalClientError: a backend that was terminated while the connection sat idle leaves its FATAL
    message half-consumed, and the COPY's first step then finds the protocol in another state.
    """
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    statement = f"COPY {table}"
    try:
        await driver.copy_records_to_table(table, records=records, columns=columns)
    except asyncpg.DataError as error:
        raise DataError(statement, None, error) from error
    except asyncpg.IntegrityConstraintViolationError as error:
        raise IntegrityError(statement, None, error) from error
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as error:
        raise OperationalError(statement, None, error) from error

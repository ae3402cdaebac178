"""COPY's driver errors reach the sink as the SQLAlchemy errors it isolates or retries (real Postgres)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, OperationalError, SQLAlchemyError

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from store.copying import copy_records
from store.predictions import PredictionRow, store_predictions
from tests.helpers.db import asyncpg_dsn
from tests.helpers.pipeline import count, prediction


async def test_a_row_postgres_cannot_hold_is_a_data_error(database_url: str, unique_id: str) -> None:
    good = PredictionRow.of(prediction(f"c{unique_id}"))
    bad = good._replace(event_id=str(prediction("x").event_id), customer_id="nul\x00inside")
    engine = create_engine(DatabaseSettings(database_url=database_url))
    try:
        with pytest.raises(DataError):
            async with create_sessionmaker(engine)() as session, session.begin():
                await store_predictions(session, [good, bad])
        async with create_sessionmaker(engine)() as session, session.begin():  # the good row alone stores
            await store_predictions(session, [good])
    finally:
        await engine.dispose()
    assert await count(database_url, "predictions") == 1


async def test_a_connection_lost_during_copy_is_an_operational_error(database_url: str) -> None:
    engine = create_engine(DatabaseSettings(database_url=database_url))
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    session = create_sessionmaker(engine)()
    try:
        await session.execute(text("CREATE TEMP TABLE t (x int)"))
        pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(OperationalError):
            await copy_records(session, "t", [(1,)])
        with pytest.raises(SQLAlchemyError):  # as after any lost connection (the sink retries on these)
            await session.close()
    finally:
        await admin.close()
        await engine.dispose()

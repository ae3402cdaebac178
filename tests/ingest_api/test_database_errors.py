"""A Postgres connection lost in the middle of a request is a 503, a statement that cannot succeed a 500."""

from __future__ import annotations

import asyncpg
import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from ingest_api.errors import install_error_handlers
from tests.helpers.db import asyncpg_dsn


def _app(engine: AsyncEngine, admin: asyncpg.Connection) -> FastAPI:
    """Two routes on the real database: one whose backend is terminated between its two statements."""
    app = FastAPI()
    install_error_handlers(app)
    sessions = create_sessionmaker(engine)

    @app.get("/lost")
    async def lost() -> dict[str, int]:
        async with sessions() as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            # On an open admin connection the next statement follows within a millisecond, before the
            # driver has seen the socket close: it fails on asyncpg's protocol state, not as a lost link.
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            return {"one": (await session.execute(text("SELECT 1"))).scalar_one()}

    @app.get("/broken")
    async def broken() -> dict[str, int]:
        async with sessions() as session:
            return {"n": (await session.execute(text("SELECT count(*) FROM no_such_table"))).scalar_one()}

    return app


async def test_a_backend_terminated_mid_request_is_a_503_and_a_bad_statement_a_500(database_url: str) -> None:
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    engine = create_engine(DatabaseSettings(database_url=database_url))
    try:
        transport = httpx.ASGITransport(app=_app(engine, admin), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            lost = [await client.get("/lost") for _ in range(10)]  # the error type varies with timing
            broken = await client.get("/broken")
    finally:
        await admin.close()
        await engine.dispose()

    assert [response.status_code for response in lost] == [503] * 10, [r.text for r in lost]
    assert {response.headers["retry-after"] for response in lost} == {"1"}
    assert {response.json()["error"]["code"] for response in lost} == {"service_unavailable"}
    assert broken.status_code == 500
    assert broken.json()["error"]["message"] == "internal error; it has been logged"

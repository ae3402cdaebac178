"""Array literals read back by the real Postgres as exactly the values they were built from."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from store.literals import float_array, text_array
from store.predictions import PredictionRow, store_predictions
from tests.helpers.db import asyncpg_dsn
from tests.helpers.pipeline import fetch, prediction

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=12)
awkward = st.sampled_from(['"', "\\", ",", "{", "}", " ", "NULL", "null", "", '\\"', "é", "\n"])


def read_back(admin_url: str, literal: str, element: str) -> list[Any]:
    """What Postgres makes of the literal as an array of `element`."""
    async def query() -> list[Any]:
        connection = await asyncpg.connect(asyncpg_dsn(admin_url))
        try:
            return list(await connection.fetchval(f"SELECT CAST(CAST($1 AS text) AS {element}[])", literal))
        finally:
            await connection.close()
    return asyncio.run(query())


@SETTINGS
@given(st.lists(st.one_of(texts, awkward, st.none()), max_size=8))
def test_text_arrays_read_back_as_their_values(postgres_admin_url: str, values: list[str | None]) -> None:
    assert read_back(postgres_admin_url, text_array(values), "text") == values


@SETTINGS
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=8))
def test_float_arrays_read_back_as_the_same_floats(postgres_admin_url: str, values: Sequence[float]) -> None:
    stored = read_back(postgres_admin_url, float_array(values), "float8")
    assert stored == list(values)
    assert [math.copysign(1.0, v) for v in stored] == [math.copysign(1.0, v) for v in values]


async def test_stored_predictions_keep_quotes_backslashes_and_braces(
    database_url: str, unique_id: str
) -> None:
    version = 'v"\\,{x} NULL'
    message = prediction(f"c{unique_id}", model_version=version)
    row = PredictionRow.of(message)
    hostile = orjson.loads(row.recommendations)
    hostile[0]["name"] = 'Car "quoted" \\ {braced}, NULL'
    row = row._replace(recommendations=orjson.dumps(hostile).decode())
    engine = create_engine(DatabaseSettings(database_url=database_url))
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            await store_predictions(session, [row])
    finally:
        await engine.dispose()
    stored = await fetch(database_url, "SELECT model_version, recommendations, propensity FROM predictions")
    assert [(r["model_version"], orjson.loads(r["recommendations"]), r["propensity"]) for r in stored] == [
        (version, hostile, message.propensity)]

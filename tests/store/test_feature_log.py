"""The feature log in Postgres: the values a prediction was scored on, 87 bytes a row."""

from __future__ import annotations

from sqlalchemy import text

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from models.engine import InferenceEngine
from tests.helpers.api import dataset_rows
from tests.helpers.feature_log import serve


async def test_each_stored_prediction_keeps_its_features_in_87_bytes(
    database_url: str, inference_engine: InferenceEngine, unique_id: str
) -> None:
    database = create_engine(DatabaseSettings(database_url=database_url, database_pool_size=1))
    sessionmaker = create_sessionmaker(database)
    rows = dataset_rows(50)
    customers = [f"f{unique_id}-{i}" for i in range(50)]
    try:
        await serve(sessionmaker, inference_engine, customers, rows, largest=20)
        async with sessionmaker() as session:
            values = "SELECT get_byte(features, i)::smallint FROM generate_series(0, 85) i"
            stored = (await session.execute(text(
                "SELECT customer_id, features, pg_column_size(features), "
                f"pg_column_size(ARRAY({values})), pg_column_size(to_jsonb(ARRAY({values}))) FROM predictions"
            ))).all()
    finally:
        await database.dispose()

    by_customer = {customer: list(features) for customer, features, *_ in stored}
    assert by_customer == dict(zip(customers, rows, strict=True))
    assert {row[2] for row in stored} == {87}  # against a smallint[] and jsonb of the same values:
    assert min(row[3] for row in stored) == 196 and min(row[4] for row in stored) > 300

"""The outcome join's packed chunks label as rows read live do, with late rows and a racing refresh."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from store.outcome_join import VERSION, Joined, Source, join_outcomes, join_source
from store.outcomes import OutcomeRow, store_outcomes
from store.prediction_chunks import read_chunks, refresh_chunks, watermarks
from store.predictions import PredictionRow, store_predictions
from tests.helpers.pipeline import BASE_TIME, prediction

HORIZON = timedelta(hours=30)
LIVE = Source(VERSION.candidates, VERSION.window)  # every row read live (watermarks bound at 0)


def _rows(version: str, tag: str, minutes: list[int]) -> list[PredictionRow]:
    return [PredictionRow.of(prediction(f"{tag}-{i % 5}", minute=m, model_version=version,
                                        propensity=(i % 7) / 7)) for i, m in enumerate(minutes)]


def _canonical(joined: Joined) -> tuple[object, ...]:
    assert joined.ids is not None
    order = np.argsort(joined.ids)
    trials = sorted(zip(joined.trial_products, joined.trial_scored.tolist(), joined.trial_hits.tolist(),
                        strict=True))
    return (joined.ids[order].tolist(), joined.status[order].tolist(), joined.propensity[order].tolist(),
            joined.scored[order].tolist(), trials, joined.unmatched)


async def test_chunks_label_as_rows_read_live_with_late_rows_and_a_racing_refresh(
    database_url: str, unique_id: str
) -> None:
    version, tag = f"v-ch{unique_id}", f"ch{unique_id}"
    engine = create_engine(DatabaseSettings(database_url=database_url))
    sessions = create_sessionmaker(engine)
    since, until = BASE_TIME - timedelta(days=1), BASE_TIME + timedelta(days=4)
    as_of = BASE_TIME + timedelta(hours=40)  # some horizons closed, some open
    bought = [("caravan", 2), ("car", 5), ("caravan", 26), ("fire", 50), ("caravan", 70), ("life", 1)]
    outcomes = [OutcomeRow(f"{tag}-o{i}", f"{tag}-{i % 5}", product,
                           (BASE_TIME + timedelta(hours=hours)).isoformat(), "test")
                for i, (product, hours) in enumerate(bought)]

    async def store(rows: list[PredictionRow]) -> None:
        async with sessions() as session, session.begin():
            await store_predictions(session, rows)

    async def compare() -> None:
        async with sessions() as session, session.begin():
            chunked = await join_outcomes(session, version, since, until, HORIZON, as_of)
        async with sessions() as session, session.begin():
            live = await join_source(session, LIVE, since, until, HORIZON, as_of, version=version,
                                     after0=0, after1=0)
        assert _canonical(chunked) == _canonical(live)

    try:
        await store(_rows(version, tag, list(range(0, 3000, 97))))
        async with sessions() as session, session.begin():
            await store_outcomes(session, outcomes)
        assert await refresh_chunks(sessions, min_rows=1) > 0
        await compare()
        # Late rows: scored inside packed days, stored after the pack, read live beside the chunks.
        await store(_rows(version, tag, [3, 61, 1500, 1501]))
        await compare()
        async with sessions() as session, session.begin():
            marks = await watermarks(session)
        assert await refresh_chunks(sessions, min_rows=1) > 0  # commits between the watermark and the read
        async with sessions() as session, session.begin():
            packed = await read_chunks(session, version, since, until, marks)
        assert len(packed.keys) and int((packed.keys >> 1).max()) <= marks[0]
        await compare()
    finally:
        await engine.dispose()

"""Packed chunks and links label as rows read live do, with late rows and a racing refresh."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from store import outcome_join
from store.outcome_join import POSITIVE, VERSION, Joined, Source, join_outcomes, join_source
from store.outcome_links import horizon_us, link_watermarks, refresh_links
from store.outcomes import OutcomeRow, store_outcomes
from store.prediction_chunks import read_chunks, refresh_chunks, watermarks
from store.predictions import PredictionRow, store_predictions
from store.shadow import store_shadow_predictions
from tests.helpers.pipeline import BASE_TIME, prediction

HORIZON = timedelta(hours=30)
OTHER_HORIZON = timedelta(hours=20, microseconds=500)
LIVE = Source(VERSION.candidates, VERSION.window)  # every row read live (watermarks bound at 0)


def _rows(version: str, tag: str, minutes: list[int]) -> list[PredictionRow]:
    return [PredictionRow.of(prediction(f"{tag}-{i % 5}", minute=m, model_version=version,
                                        propensity=(i % 7) / 7)) for i, m in enumerate(minutes)]


def _canonical(joined: Joined) -> tuple[object, ...]:
    assert joined.ids is not None  # ids repeat across the two tables: compare multisets of whole rows
    rows = sorted(zip(joined.ids.tolist(), joined.status.tolist(), joined.propensity.tolist(),
                      joined.scored.tolist(), strict=True))
    trials = sorted(zip(joined.trial_products, joined.trial_scored.tolist(), joined.trial_hits.tolist(),
                        strict=True))
    return rows, trials, joined.unmatched


async def labelled_as_live(sessions: async_sessionmaker[AsyncSession], version: str, since: datetime,
                           until: datetime, horizon: timedelta, as_of: datetime) -> Joined:
    """The version's window as join_outcomes labels it (chunks, packed links, live rows beyond them), once
    asserted equal to every row read live."""
    async with sessions() as session, session.begin():
        packed = await join_outcomes(session, version, since, until, horizon, as_of)
    async with sessions() as session, session.begin():
        live = await join_source(session, LIVE, since, until, horizon, as_of, version=version,
                                 after0=0, after1=0)
    assert _canonical(packed) == _canonical(live)
    return packed


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
        await labelled_as_live(sessions, version, since, until, HORIZON, as_of)

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


async def test_packed_links_label_as_the_full_statement_with_late_rows_and_a_racing_refresh(
    database_url: str, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    version, tag = f"v-ln{unique_id}", f"ln{unique_id}"
    engine = create_engine(DatabaseSettings(database_url=database_url))
    sessions = create_sessionmaker(engine)
    since, until = BASE_TIME - timedelta(days=1), BASE_TIME + timedelta(days=4)
    as_of = BASE_TIME + timedelta(hours=40)

    def outcomes(name: str, bought: list[tuple[str, int]]) -> list[OutcomeRow]:
        return [OutcomeRow(f"{tag}-{name}{i}", f"{tag}-{i % 5}", product,
                           (BASE_TIME + timedelta(minutes=minutes)).isoformat(), "test")
                for i, (product, minutes) in enumerate(bought)]

    async def store(served: list[PredictionRow], shadow: list[PredictionRow], bought: list[OutcomeRow]
                    ) -> None:
        async with sessions() as session, session.begin():
            await store_predictions(session, served)
            await store_shadow_predictions(session, shadow)
            await store_outcomes(session, bought)

    async def compare() -> None:
        for horizon in (HORIZON, OTHER_HORIZON):  # packed, and a horizon with no pack (every link live)
            packed = await labelled_as_live(sessions, version, since, until, horizon, as_of)
            assert int(np.sum(packed.status == POSITIVE)) and len(packed.trial_products)

    first = outcomes("a", [("caravan", 120), ("car", 300), ("caravan", 1560), ("fire", 3000),
                           ("caravan", 4200), ("life", 60), ("caravan", 2900)])
    try:
        await store(_rows(version, tag, list(range(0, 3000, 97))),
                    _rows(version, tag, list(range(40, 3000, 131))), first)
        assert await refresh_chunks(sessions, min_rows=1) > 0
        assert await refresh_links(sessions, HORIZON, min_rows=1) > 0
        async with sessions() as session, session.begin():
            assert (await link_watermarks(session, OTHER_HORIZON))["links_o"] == 0
        await compare()
        # Above every watermark: outcomes out of order and redelivered, predictions scored long ago (one the
        # new latest before a packed outcome: customer 0 bought a caravan at minute 120), shadow rows too.
        late = [PredictionRow.of(prediction(f"{tag}-0", minute=110, model_version=version, propensity=0.9))]
        await store([*late, *_rows(version, tag, [3, 61, 1500, 1501])], _rows(version, tag, [50, 1400]),
                    [*outcomes("b", [("caravan", 100), ("car", 2000), ("caravan", 1502)]), *first[:3]])
        await compare()
        async with sessions() as session, session.begin():
            stale = await link_watermarks(session, HORIZON)
        assert await refresh_links(sessions, HORIZON, min_rows=1) > 0
        await compare()
        # A refresh committing between the question's watermark read and its statement: the pairs it packed
        # lie outside the watermarks read, and are linked live instead.
        await store(_rows(version, tag, [7, 1300]), [], outcomes("c", [("caravan", 1310), ("car", 140)]))
        async with sessions() as session, session.begin():
            stale = await link_watermarks(session, HORIZON)
        assert await refresh_links(sessions, HORIZON, min_rows=1) > 0

        async def read_before_the_refresh(session: object, horizon: timedelta) -> dict[str, object]:
            return stale if horizon == HORIZON else {**stale, "horizon_us": horizon_us(horizon),
                                                     "links_o": 0, "links_p0": 0, "links_p1": 0}

        monkeypatch.setattr(outcome_join, "link_watermarks", read_before_the_refresh)
        await compare()
    finally:
        await engine.dispose()

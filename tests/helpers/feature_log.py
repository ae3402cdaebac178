"""Predictions served as the pipeline serves them: the scorer's micro-batch code, then the sink's store."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import uuid4

import threadpoolctl
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.engine import InferenceEngine
from schemas import topics
from schemas.wire import feature_event_json
from scorer.scoring import assemble, decode_records, score_matrix
from sink.parsing import parse_predictions
from store.predictions import store_predictions
from tests.helpers.records import Record


async def serve(
    sessionmaker: async_sessionmaker[AsyncSession], engine: InferenceEngine, customers: Sequence[str],
    features: Sequence[Sequence[int]], seed: int = 0, largest: int = 700,
) -> int:
    """Score the rows in micro-batches of random sizes exactly as the scorer does (decode, one engine call
    on one BLAS thread, assemble with the feature log) and store them as the sink does; the batch count."""
    now = datetime.now(UTC)
    records = [
        Record(topics.CUSTOMER_FEATURES, 0, i, customer.encode(),
               feature_event_json(uuid4(), customer, list(values), now, "event"))
        for i, (customer, values) in enumerate(zip(customers, features, strict=True))
    ]
    rng = random.Random(seed)
    start = batches = 0
    while start < len(records):
        batch = records[start : start + rng.randint(1, largest)]
        start += len(batch)
        valid, matrix, dead = decode_records(batch)
        assert not dead
        with threadpoolctl.threadpool_limits(1):
            scored = assemble(valid, score_matrix(engine, matrix), matrix)
        published = [Record(topics.PREDICTIONS, 0, k, key, value) for k, (key, value) in
                     enumerate(scored.predictions)]
        rows, invalid = parse_predictions(published)
        assert not invalid and len(rows) == len(batch)
        async with sessionmaker() as session, session.begin():
            await store_predictions(session, [row for _, row in rows])
        batches += 1
    return batches

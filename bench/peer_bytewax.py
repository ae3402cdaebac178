"""The peer: the same pipeline as Bytewax 0.21 dataflows (`collect` micro-batches), as a user would write it.

Two flows, like `streamscore scorer` and `sink`: `scorer_flow` reads customer-features, parses each event
with orjson into the (n, 86) matrix, checks every range with one NumPy comparison, scores with this
project's InferenceEngine and writes the Prediction JSON per row; `sink_flow` reads predictions and stores
each collected batch with this project's SQL (store_predictions), then its Redis write (cache_predictions).
Configured by the STREAMSCORE_* variables of the bench; run with

    python -m bytewax.run bench/peer_bytewax.py:scorer_flow     (or :sink_flow)
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import bytewax.operators as op
import numpy as np
import orjson
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from redis.asyncio import Redis

from infra.database import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from models.engine import InferenceEngine
from schemas import topics
from schemas.features import FEATURE_LOWER, FEATURE_UPPER
from schemas.wire import EventIds, prediction_json
from store.cache import CacheEntry, cache_predictions
from store.predictions import PredictionRow, store_predictions

BROKERS = [os.environ.get("STREAMSCORE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")]
PREFIX = os.environ.get("STREAMSCORE_TOPIC_PREFIX", "")
REDIS_URL = os.environ.get("STREAMSCORE_REDIS_URL", "redis://127.0.0.1:6379/0")
LOWER, UPPER = np.array(FEATURE_LOWER), np.array(FEATURE_UPPER)
Message: TypeAlias = KafkaSourceMessage[bytes | None, bytes | None]


def _source(topic: str) -> KafkaSource:
    return KafkaSource(BROKERS, [PREFIX + topic], tail=True, batch_size=5000)


class Scorer:
    """The engine, loaded on the first batch (the sink flow imports this module too)."""

    engine: InferenceEngine | None = None

    def __call__(self, batch: list[Message]) -> list[KafkaSinkMessage[bytes, bytes]]:
        """Parse, range-check, score and encode one collected batch."""
        if self.engine is None:
            self.engine = InferenceEngine.load()
        events = [orjson.loads(m.value or b"") for m in batch]
        matrix = np.array([e["features"] for e in events], dtype=np.int64)
        ok = np.all((matrix >= LOWER) & (matrix <= UPPER), axis=1)
        kept = [e for e, good in zip(events, ok.tolist(), strict=True) if good]
        records = self.engine.score(matrix[ok]).records()
        now = datetime.now(UTC)
        return [
            KafkaSinkMessage(
                e["customer_id"].encode(),
                prediction_json(EventIds(e["event_id"], e["customer_id"], e.get("source", "event"),
                                         e.get("batch_id")), record, now),
            )
            for e, record in zip(kept, records, strict=True)
        ]


class _StorePartition(StatelessSinkPartition[list[Message]]):
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.sessionmaker = create_sessionmaker(create_engine(DatabaseSettings()))
        self.redis = Redis.from_url(REDIS_URL)

    def write_batch(self, items: list[list[Message]]) -> None:
        for batch in items:
            self.loop.run_until_complete(self._store(batch))

    async def _store(self, batch: list[Message]) -> None:
        rows, raw = [], []
        for message in batch:
            p = orjson.loads(message.value or b"")
            rows.append(PredictionRow(
                p["event_id"], p["customer_id"], p["model_version"], p["source"], p.get("batch_id"),
                orjson.dumps(p["recommendations"]).decode(), p["propensity"], p["segment"]["label"],
                p["segment"]["score"], p["scored_at"],
            ))
            raw.append(message.value or b"")
        async with self.sessionmaker() as session, session.begin():
            stored = await store_predictions(session, rows)
        latest: dict[tuple[str, str], CacheEntry] = {}  # the newest new row per key, after the commit
        for row, value in zip(rows, raw, strict=True):
            version = stored.versions.get(row.event_id)
            key = (row.customer_id, row.model_version)
            if version is not None and (key not in latest or latest[key][3] < version):
                latest[key] = (row.customer_id, row.model_version, value, version)
        await cache_predictions(self.redis, list(latest.values()), 86_400)

    def close(self) -> None:
        self.loop.run_until_complete(self.redis.aclose())
        self.loop.close()


class StoreSink(DynamicSink[list[Message]]):
    """Postgres + Redis, one transaction per collected batch."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        """One partition per worker."""
        return _StorePartition()


def _collected(flow: Dataflow, topic: str, wait_ms: int, size: int) -> Any:
    stream = op.input("in", flow, _source(topic))
    keyed = op.key_on("one_key", stream, lambda _: "all")
    batches = op.collect("collect", keyed, timeout=timedelta(milliseconds=wait_ms), max_size=size)
    return op.map("values", batches, lambda item: item[1])


scorer_flow = Dataflow("peer_scorer")
op.output("predictions", op.flat_map("score", _collected(scorer_flow, topics.CUSTOMER_FEATURES, 20, 4000),
                                     Scorer()), KafkaSink(BROKERS, PREFIX + topics.PREDICTIONS))
sink_flow = Dataflow("peer_sink")
op.output("store", _collected(sink_flow, topics.PREDICTIONS, 50, 5000), StoreSink())

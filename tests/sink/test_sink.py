"""Sink: exactly-once storage in Postgres and Redis, batch-job progress, and outages, on the real engines."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import orjson
import pytest
import redis.asyncio as redis
from sqlalchemy.engine import make_url

from infra.database import create_engine, create_sessionmaker
from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from schemas import topics
from schemas.messages import DeadLetter
from sink import metrics
from sink.app import runtime_of
from store.batch_jobs import mark_published
from streamscore.embedded import free_port
from tests.helpers.cache import cached_prediction
from tests.helpers.pipeline import (
    committed_offsets,
    count,
    encoded,
    end_offsets,
    fetch,
    prediction,
    produce,
    running,
    sink_settings,
    wait_committed,
    wait_for,
)


class TcpProxy:
    """A loopback TCP forwarder we can switch on and off, to take 'Postgres' down for one client only."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        """Accept and forward connections."""
        self.server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Refuse new connections and cut existing ones."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, upstream_writer]

        async def pump(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    target.write(data)
                    await target.drain()
            target.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))


async def test_sink_stores_every_prediction_once_in_postgres_and_redis(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str
) -> None:
    settings = sink_settings(kafka_settings, database_url, redis_url)
    await ensure_topics(settings)
    customers = [f"s{unique_id}-{i}" for i in range(30)]
    first = [prediction(c, minute=1) for c in customers]
    second = [prediction(c, minute=2, propensity=0.9) for c in customers[:10]]
    older = prediction(customers[20], minute=0, propensity=0.7)  # scored before first[20], arrives after
    messages = encoded([*first, *second, older])
    messages.append((b"bad", b'{"event_id": "not-a-uuid", "customer_id": "bad"}'))
    # Contract-valid but unstorable: must be dead-lettered, not retried forever.
    messages += encoded(
        [prediction("nul", model_version="v\x00"), prediction("long", model_version="v" * 65)]
    )
    topic = topic_name(settings, topics.PREDICTIONS)
    sent = await produce(settings, topic, messages)
    sent += await produce(settings, topic, encoded(first[:5]))  # redelivered duplicates

    async with running(settings) as app:

        async def stored() -> bool:
            return (
                await count(database_url, "predictions") == 41
                and await count(database_url, "dead_letters") == 3
            )

        await wait_for(stored)
        await wait_committed(settings, settings.topic_prefix + topics.SINK_GROUP, [topic], sent)
        stats = runtime_of(app).stats

    assert stats.events_in == len(sent) and stats.events_out == 41
    rows = await fetch(database_url, "SELECT event_id, recommendations FROM predictions")
    assert {r["event_id"] for r in rows} == {p.event_id for p in [*first, *second, older]}
    assert orjson.loads(rows[0]["recommendations"])[0]["product_id"] == "car"
    by_customer = {r["customer_id"]: r for r in await fetch(database_url, "SELECT * FROM customers")}
    assert len(by_customer) == 30
    assert by_customer[customers[0]]["last_event_id"] == second[0].event_id
    assert by_customer[customers[0]]["predictions_count"] == 2
    assert by_customer[customers[20]]["last_event_id"] == first[20].event_id  # never moves backwards
    assert by_customer[customers[20]]["predictions_count"] == 2
    segments = await fetch(database_url, "SELECT * FROM segments")
    assert len(segments) == 30 and {s["model_version"] for s in segments} == {"v-test"}
    dead = {r["customer_id"]: r for r in await fetch(database_url, "SELECT * FROM dead_letters")}
    assert dead["bad"]["source_topic"] == topic and "event_id" in dead["bad"]["reason"]
    assert dead["bad"]["stage"] == "validation"
    assert "NUL" in dead["nul"]["reason"] and "model_version" in dead["long"]["reason"]

    client = redis.from_url(redis_url)
    try:
        cached = await client.get(f"predict:{customers[0]}:v-test")
        ttl = await client.ttl(f"predict:{customers[0]}:v-test")
        cached_keys = [key async for key in client.scan_iter(match=f"predict:s{unique_id}-*")]
    finally:
        await client.aclose()
    assert cached_prediction(cached) == second[0]
    assert 86_000 < ttl <= 86_400
    assert len(cached_keys) == 30


async def test_batch_job_progress_counts_redelivery_once_and_completes(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str
) -> None:
    settings = sink_settings(kafka_settings, database_url, redis_url)
    await ensure_topics(settings)
    late, early = uuid.uuid4(), uuid.uuid4()  # published after / before the sink finishes
    await fetch(
        database_url,
        "INSERT INTO batch_jobs (task_id, status, rows_total, rows_valid, published) VALUES "
        "($1, 'queued', 6, 5, false), ($2, 'queued', 3, 3, true)",
        late,
        early,
    )
    late_rows = [prediction(f"b{unique_id}-{i}", batch_id=late) for i in range(4)]
    early_rows = [prediction(f"e{unique_id}-{i}", batch_id=early) for i in range(3)]
    features_topic = topic_name(settings, topics.BATCH_ROWS)
    poison = DeadLetter(
        payload="{}",
        reason="inference failed",
        stage="inference",
        topic=features_topic,
        partition=0,
        offset=7,
        batch_id=late,
        customer_id=f"b{unique_id}-x",
    )
    predictions_topic = topic_name(settings, topics.PREDICTIONS)
    dead_topic = topic_name(settings, topics.DEAD_LETTER)
    await produce(settings, predictions_topic, encoded([*late_rows, *early_rows, *late_rows]))  # twice
    await produce(settings, dead_topic, [(None, poison.model_dump_json().encode())] * 2)  # same origin twice

    async with running(settings):

        async def accounted() -> bool:
            rows = await fetch(
                database_url, "SELECT rows_scored, rows_dead FROM batch_jobs WHERE task_id = $1", late
            )
            return (rows[0]["rows_scored"], rows[0]["rows_dead"]) == (4, 1)

        await wait_for(accounted)
        sent = await produce(settings, predictions_topic, encoded(late_rows[:2]))  # a later redelivery
        group = settings.topic_prefix + topics.SINK_GROUP

        async def caught_up() -> bool:
            offsets = await committed_offsets(settings, group, [predictions_topic])
            return all(offsets.get(tp, 0) >= end for tp, end in end_offsets(sent).items())

        await wait_for(caught_up)

    jobs = {r["task_id"]: r for r in await fetch(database_url, "SELECT * FROM batch_jobs")}
    assert (jobs[late]["rows_scored"], jobs[late]["rows_dead"], jobs[late]["status"]) == (4, 1, "processing")
    assert jobs[late]["finished_at"] is None
    assert (jobs[early]["rows_scored"], jobs[early]["status"]) == (3, "completed")
    assert jobs[early]["finished_at"] is not None
    assert await count(database_url, "predictions") == 7 and await count(database_url, "dead_letters") == 1

    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            await mark_published(session, late)  # what the API calls once every row is on the broker
            await session.commit()
    finally:
        await engine.dispose()
    job = (await fetch(database_url, "SELECT * FROM batch_jobs WHERE task_id = $1", late))[0]
    assert job["status"] == "completed" and job["published"] and job["finished_at"] is not None


async def test_redis_down_still_writes_postgres_and_commits(
    kafka_settings: KafkaSettings, database_url: str, unique_id: str
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = sink_settings(kafka_settings, database_url, dead_redis, redis_timeout_seconds=0.2)
    await ensure_topics(settings)
    topic = topic_name(settings, topics.PREDICTIONS)
    failures_before = metrics.CACHE_FAILURES._value.get()
    sent = await produce(settings, topic, encoded([prediction(f"r{unique_id}-{i}") for i in range(10)]))

    async with running(settings):

        async def stored() -> bool:
            return await count(database_url, "predictions") == 10

        await wait_for(stored)
        await wait_committed(settings, settings.topic_prefix + topics.SINK_GROUP, [topic], sent)
    assert metrics.CACHE_FAILURES._value.get() > failures_before


async def test_postgres_down_commits_nothing_keeps_consuming_and_recovers(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str
) -> None:
    url = make_url(database_url)
    proxy = TcpProxy(url.port or 5432)  # starts switched off: connections are refused
    settings = sink_settings(
        kafka_settings,
        url.set(port=proxy.port).render_as_string(hide_password=False),
        redis_url,
        retry_initial_seconds=0.05,
        retry_max_seconds=0.2,
        retry_window_seconds=0.5,  # short, so the give-up → rewind → re-poll path runs too
    )
    await ensure_topics(settings)
    topic = topic_name(settings, topics.PREDICTIONS)
    group = settings.topic_prefix + topics.SINK_GROUP
    sent = await produce(settings, topic, encoded([prediction(f"p{unique_id}-{i}") for i in range(20)]))
    failures_before = metrics.DB_FAILURES._value.get()

    async with running(settings) as app:
        runtime = runtime_of(app)

        async def failing_repeatedly() -> bool:
            return metrics.DB_FAILURES._value.get() - failures_before >= 8

        await wait_for(failing_repeatedly)
        assert await committed_offsets(settings, group, [topic]) == {}
        assert runtime.stats.events_in > 20  # the batch was rewound and polled again: the consumer lives
        assert await count(database_url, "predictions") == 0

        await proxy.start()
        try:

            async def stored() -> bool:
                return await count(database_url, "predictions") == 20

            await wait_for(stored)
            await wait_committed(settings, group, [topic], sent)
        finally:
            await app.stop()
            await proxy.stop()
    assert runtime.stats.events_out == 20


@pytest.mark.parametrize("payload", [b"\x00\xff", b'{"reason": "no origin"}'])
async def test_unreadable_dead_letter_is_kept_as_a_row_about_itself(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, payload: bytes
) -> None:
    settings = sink_settings(kafka_settings, database_url, redis_url)
    await ensure_topics(settings)
    topic = topic_name(settings, topics.DEAD_LETTER)
    sent = await produce(settings, topic, [(None, payload)])

    async with running(settings):

        async def stored() -> bool:
            return await count(database_url, "dead_letters") == 1

        await wait_for(stored)
        await wait_committed(settings, settings.topic_prefix + topics.SINK_GROUP, [topic], sent)
    row = (await fetch(database_url, "SELECT * FROM dead_letters"))[0]
    assert (row["source_topic"], row["source_offset"]) == (topic, sent[0].offset)
    assert row["reason"].startswith("unreadable dead letter") and row["stage"] == "decode"


async def test_records_larger_than_the_fetch_bound_are_still_consumed(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str
) -> None:
    """The per-partition fetch bound limits read-ahead only: a bigger record is fetched whole, not wedged."""
    settings = sink_settings(kafka_settings, database_url, redis_url, fetch_partition_max_bytes=1024)
    await ensure_topics(settings)
    topic = topic_name(settings, topics.PREDICTIONS)
    predictions = [prediction(f"f{unique_id}-{i}") for i in range(40)]
    huge = b'{"event_id": "' + b"x" * 200_000 + b'"}'  # 200 KB, unreadable: dead-lettered with its reason
    messages = [*encoded(predictions[:20]), (b"huge", huge), *encoded(predictions[20:])]
    sent = await produce(settings, topic, messages)

    async with running(settings):

        async def stored() -> bool:
            return (await count(database_url, "predictions") == 40
                    and await count(database_url, "dead_letters") == 1)

        await wait_for(stored)
        await wait_committed(settings, settings.topic_prefix + topics.SINK_GROUP, [topic], sent)
    letter = (await fetch(database_url, "SELECT customer_id, reason, payload_size FROM dead_letters"))[0]
    assert "event_id" in letter["reason"] and letter["payload_size"] == len(huge)

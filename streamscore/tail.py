"""`streamscore tail predictions`: follow predictions.v1 from its real end, group-less, committing nothing."""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape

from streamscore.client import EXIT_USAGE, CliError
from streamscore.demo import segment_text

console = Console()
errors = Console(stderr=True)


async def tail(settings: Any, customer: str | None, limit: int, raw: bool) -> None:
    """Print the predictions published from now on, on every partition, without joining a group."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    from infra.kafka import topic_name
    from infra.kafka_connection import connection_options
    from infra.kafka_diagnosis import diagnose
    from schemas import topics

    topic = topic_name(settings, topics.PREDICTIONS)
    bootstrap = settings.kafka_bootstrap
    consumer = AIOKafkaConsumer(**connection_options(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="latest", request_timeout_ms=10_000,
                                isolation_level="read_committed")  # never an aborted prediction
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its retries' lines; failures are ours to say
    try:
        await consumer.start()
    except KafkaError as error:
        with contextlib.suppress(Exception):
            await consumer.stop()  # a consumer that never started still holds its client: close it quietly
        diagnosis = await diagnose(settings)
        if diagnosis.rejected:
            raise CliError(diagnosis.message, exit_code=EXIT_USAGE) from None
        raise CliError(f"cannot reach Kafka at {bootstrap} ({type(error).__name__}). Is `streamscore dev` "
                       "running? Pass --bootstrap or set STREAMSCORE_KAFKA_BOOTSTRAP.") from None
    try:
        # All topics' metadata, asked now: the consumer's own cache holds only what bootstrap returned,
        # which is every topic on Tansu but none on Apache Kafka.
        metadata = await consumer._client.fetch_all_metadata()
        partitions = sorted(metadata.partitions_for_topic(topic) or [])
        if not partitions:
            raise CliError(f"topic {topic} does not exist on {bootstrap}")
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        # A broker's listed end may trail the data (Tansu leaves out each partition's last batch), so
        # records are also skipped by time: only those produced after this point are "from now on".
        since_ms = int(time.time() * 1000)
        await consumer.seek_to_end(*assigned)
        for partition in assigned:  # resolve "end" now, so nothing published after this line is missed
            await consumer.position(partition)
        errors.print(f"[dim]tailing {topic} on {bootstrap} ({len(assigned)} partitions) — Ctrl-C to stop[/]")
        shown = 0
        while not limit or shown < limit:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            for record in (r for records in batch.values() for r in records):
                if record.timestamp < since_ms:
                    continue
                shown += _show_prediction(record.value, customer, raw)
                if limit and shown >= limit:
                    break
    finally:
        await consumer.stop()


def _show_prediction(value: bytes | None, customer: str | None, raw: bool) -> int:
    """Print one prediction if it matches; returns 1 when printed."""
    try:
        prediction = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        errors.print(f"[yellow]skipped an undecodable record ({len(value or b'')} bytes)[/]")
        return 0
    if customer and prediction.get("customer_id") != customer:
        return 0
    if raw:
        print(orjson.dumps(prediction).decode(), flush=True)
        return 1
    recommendations = prediction.get("recommendations", [])
    recs = " · ".join(f"{r['product_id']} {r['probability']:.2f}" for r in recommendations)
    segment = prediction.get("segment") or {"label": "?"}
    scored = str(prediction.get("scored_at", ""))
    with_time = scored[11:19] if len(scored) >= 19 else datetime.now().strftime("%H:%M:%S")
    console.print(
        f"[dim]{with_time}[/] [bold]{escape(str(prediction.get('customer_id')))}[/] "
        f"{escape(recs)}  propensity [cyan]{float(prediction.get('propensity', 0)):.3f}[/]  "
        f"segment [magenta]{escape(segment_text(segment))}[/]  "
        f"[dim]{prediction.get('source')} {prediction.get('model_version')}[/]",
        highlight=False,
        soft_wrap=True,
    )
    return 1

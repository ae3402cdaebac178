"""Tracing end to end on the real broker, Postgres and Redis: API, scorer and sink in this process, each with
its own tracer provider (its own `service.name`) exporting to memory, as each process would export its own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from faststream import FastStream
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from infra import tracing
from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from schemas import topics
from scorer.app import build_app as build_scorer
from scorer.settings import ScorerSettings
from sink.app import build_app as build_sink
from sink.settings import SinkSettings
from tests.helpers.api import Api, api_settings, batch_csv, dataset_rows, read_topic, running_api

SERVICES = ("api", "scorer", "sink")
CLIENT_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CLIENT_SPAN = 0x00F067AA0BA902B7
CLIENT_PARENT = f"00-{CLIENT_TRACE:032x}-{CLIENT_SPAN:016x}-01"
UNSAMPLED_PARENT = f"00-{CLIENT_TRACE + 1:032x}-{CLIENT_SPAN:016x}-00"
TRACE_URL = "http://jaeger.test:16686/trace/{trace_id}"


@contextlib.contextmanager
def exporters() -> Iterator[dict[str, InMemorySpanExporter]]:
    """One in-memory exporter per service, set up before the apps are built; forgotten afterwards."""
    found = {service: InMemorySpanExporter() for service in SERVICES}
    for service, exporter in found.items():
        tracing.setup(service, exporter)
    try:
        yield found
    finally:
        for service in SERVICES:
            tracing.forget(service)


@contextlib.asynccontextmanager
async def pipeline(
    kafka: KafkaSettings, database_url: str, redis_url: str, engine: InferenceEngine
) -> AsyncIterator[Api]:
    """The API, a scorer and a sink on one topic prefix."""
    scorer: FastStream = build_scorer(ScorerSettings(**kafka.model_dump()), engine=engine)
    sink: FastStream = build_sink(SinkSettings(**kafka.model_dump(), database_url=database_url,
                                               redis_url=redis_url))
    # The scorer and the sink share this loop: a read's 50 ms Redis budget can run out on a busy host, and
    # the API then skips Redis for a second (by design), which the read span's assertion would take for a bug.
    settings = api_settings(kafka, database_url, redis_url, trace_url_template=TRACE_URL,
                            redis_timeout_seconds=1.0)
    async with running_api(settings, engine) as api:
        await scorer.start()
        await sink.start()
        try:
            yield api
        finally:
            await sink.stop()
            await scorer.stop()


async def eventually(predicate: Callable[[], Awaitable[bool] | bool], timeout_s: float = 45.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outcome = predicate()
        if await outcome if not isinstance(outcome, bool) else outcome:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not reached within {timeout_s:.0f}s")


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def linked_to(span: ReadableSpan, trace_id: int, span_id: int) -> bool:
    return any(link.context.trace_id == trace_id and link.context.span_id == span_id for link in span.links)


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> set[str]:
    """Names of the spans whose parent is `parent`."""
    return {s.name for s in exporter.get_finished_spans() if s.parent and s.parent.span_id == ids(parent)[1]}


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


async def test_one_event_is_one_chain_from_the_request_to_the_sink_transaction(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine,
    unique_id: str,
) -> None:
    customer, unsampled = f"t{unique_id}", f"u{unique_id}"
    with exporters() as spans:
        async with pipeline(kafka_settings, database_url, redis_url, inference_engine) as api:
            posted = await api.client.post(
                "/api/v1/events", json={"customer_id": customer, "features": dataset_rows(1)[0]},
                headers={"traceparent": CLIENT_PARENT},
            )
            assert posted.status_code == 202, posted.text
            not_sampled = await api.client.post(
                "/api/v1/events", json={"customer_id": unsampled, "features": dataset_rows(1)[0]},
                headers={"traceparent": UNSAMPLED_PARENT},
            )
            assert not_sampled.status_code == 202, not_sampled.text

            async def stored() -> bool:
                return all([(await api.client.get(f"/api/v1/predictions/{c}")).status_code == 200
                            for c in (customer, unsampled)])

            await eventually(stored)
            # The stored rows: the sampled one carries its chain's trace id, the unsampled one none.
            last = {c: (await api.client.get(f"/api/v1/predictions/{c}?history=1")).json()["decisions"][0]
                    for c in (customer, unsampled)}
            dashboard = (await api.client.get("/api/v1/dashboard/stats")).json()
            await eventually(lambda: bool(named(spans["sink"], "redis write")))
            read = await api.client.get(f"/api/v1/predictions/{customer}",
                                        headers={"traceparent": CLIENT_PARENT})
            assert read.status_code == 200

    # The API continues the caller's trace and names its span in the answer.
    (request,) = named(spans["api"], "POST /api/v1/events")
    assert request.parent is not None and request.parent.span_id == CLIENT_SPAN
    trace_id, request_span = ids(request)
    assert trace_id == CLIENT_TRACE
    assert posted.headers["traceparent"] == f"00-{trace_id:032x}-{request_span:016x}-01"  # the caller's flags
    assert request.resource.attributes["service.name"] == "api"

    # The scorer's batch span links the request; its process span continues the request's trace.
    (scorer_batch,) = [s for s in named(spans["scorer"], "scorer batch")
                       if linked_to(s, trace_id, request_span)]
    (process,) = [s for s in named(spans["scorer"], "scorer process")
                  if s.context and s.context.trace_id == trace_id]
    assert process.parent is not None and process.parent.span_id == request_span
    assert linked_to(process, *ids(scorer_batch))
    assert {"decode", "inference", "publish", "commit"} <= children(spans["scorer"], scorer_batch)

    # The prediction carried the process span's context: the sink batch links it; the transaction is a child.
    sink_batches = [s for s in named(spans["sink"], "sink batch") if linked_to(s, *ids(process))]
    assert len(sink_batches) == 1
    sink_batch_ids = ids(sink_batches[0])
    (transaction,) = [s for s in named(spans["sink"], "postgres transaction")
                      if s.parent and s.parent.span_id == sink_batch_ids[1]]
    assert transaction.context is not None and transaction.context.trace_id == sink_batch_ids[0]
    assert {"parse", "postgres transaction", "redis write", "commit"} <= children(spans["sink"],
                                                                                    sink_batches[0])
    (stored_process,) = [s for s in named(spans["sink"], "sink process")
                         if s.context and s.context.trace_id == trace_id]
    assert stored_process.parent is not None and stored_process.parent.span_id == ids(process)[1]

    # The sink stored the trace id of the chain with the prediction; the history and the dashboard show it.
    assert last[customer]["trace_id"] == f"{trace_id:032x}" and last[unsampled]["trace_id"] is None
    shown = {p["customer_id"]: p["trace_id"] for p in dashboard["recent_predictions"]}
    assert shown[customer] == f"{trace_id:032x}" and shown[unsampled] is None
    assert dashboard["trace_url_template"] == TRACE_URL

    # The read of the prediction spans its Redis lookup, under the request's span.
    reads = [s for s in named(spans["api"], "GET /api/v1/predictions/{customer_id}") if s.context
             and s.parent and s.parent.span_id == CLIENT_SPAN]
    assert reads
    assert [s.name for s in spans["api"].get_finished_spans()
            if s.parent and s.parent.span_id == ids(reads[-1])[1]] == ["redis get"]


async def test_a_csv_batch_is_a_few_batch_spans_linking_every_row(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine,
    unique_id: str,
) -> None:
    rows = 1000
    customers = [f"c{unique_id}-{i}" for i in range(rows)]
    body = batch_csv(customers, dataset_rows(rows)).encode()
    with exporters() as spans:
        async with pipeline(kafka_settings, database_url, redis_url, inference_engine) as api:
            upload = await api.client.post("/api/v1/predict/batch",
                                           files={"file": ("t.csv", body, "text/csv")})
            assert upload.status_code == 202, upload.text
            (request,) = named(spans["api"], "POST /api/v1/predict/batch")
            trace_id, request_span = ids(request)

            def linked_rows() -> int:
                return sum(int(str((link.attributes or {})["streamscore.records"]))
                           for span in named(spans["scorer"], "scorer batch") for link in span.links
                           if (link.context.trace_id, link.context.span_id) == (trace_id, request_span))

            await eventually(lambda: linked_rows() >= rows)

    assert linked_rows() == rows
    batches = [s for s in named(spans["scorer"], "scorer batch") if linked_to(s, trace_id, request_span)]
    assert 1 <= len(batches) <= 10
    # Not 1,000 traces: in the upload's own trace the scorer made one process span per batch, no more.
    in_upload_trace = [s for s in spans["scorer"].get_finished_spans()
                       if s.context and s.context.trace_id == trace_id]
    assert len(in_upload_trace) == len(batches)
    assert {s.name for s in in_upload_trace} == {"scorer process"}
    assert len({s.context.trace_id for s in named(spans["scorer"], "scorer batch") if s.context}) == len(
        named(spans["scorer"], "scorer batch"))


async def test_a_malformed_traceparent_is_ignored_and_the_request_succeeds(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, inference_engine: InferenceEngine,
    unique_id: str,
) -> None:
    settings = api_settings(kafka_settings, database_url, redis_url)
    with exporters() as spans:
        async with running_api(settings, inference_engine) as api:
            answer = await api.client.post(
                "/api/v1/events", json={"customer_id": f"m{unique_id}", "features": dataset_rows(1)[0]},
                headers={"traceparent": "00-not-a-trace-context-zz"},
            )
            records = await read_topic(kafka_settings, topics.CUSTOMER_FEATURES, 1)
    assert answer.status_code == 202, answer.text
    (request,) = named(spans["api"], "POST /api/v1/events")
    assert request.parent is None  # a trace of its own
    assert request.context is not None
    answered = tracing.traceparent(request.context)
    assert answer.headers["traceparent"].encode() == answered and request.context.trace_flags.sampled
    assert [dict(record.headers)["traceparent"] for record in records] == [answered]


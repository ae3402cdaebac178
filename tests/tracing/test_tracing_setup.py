"""infra/tracing.py without engines: when it is on, its OTLP exporter, its link-following sampler."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.sdk.util import ns_to_iso_str
from opentelemetry.trace import Link, SpanContext, StatusCode, TraceFlags, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from infra import batch_trace, tracing
from infra.logging import JsonFormatter
from infra.span_json import iso_time, span_line
from streamscore.embedded import free_port


def test_off_unless_the_standard_variables_ask() -> None:
    assert not tracing.enabled_by_env({})
    assert not tracing.enabled_by_env({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.enabled_by_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318",
                                       "OTEL_SDK_DISABLED": "true"})
    assert tracing.enabled_by_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert tracing.enabled_by_env({"OTEL_TRACES_EXPORTER": "console"})


def by_propagator(text: str) -> SpanContext | None:
    """What the SDK's W3C propagator makes of a traceparent header."""
    extracted = TraceContextTextMapPropagator().extract({"traceparent": text})
    context = get_current_span(extracted).get_span_context()
    return context if context.is_valid else None


HEXISH = "0123456789abcdefABCDEFgz- \t"


@given(st.one_of(
    st.text(HEXISH, min_size=55, max_size=55),
    st.tuples(st.sampled_from(["00", "01", "fe", "ff", "0g", "F0"]), st.text("0123456789abcdefA", min_size=32,
              max_size=32), st.text("0123456789abcdefA", min_size=16, max_size=16),
              st.text("0123456789abcdef", min_size=2, max_size=2)).map("-".join),
    st.just("00-" + "0" * 32 + "-" + "1" * 16 + "-01"), st.just("00-" + "1" * 32 + "-" + "0" * 16 + "-01"),
    st.text(HEXISH, max_size=70),
))
def test_a_traceparent_is_parsed_as_the_sdk_s_propagator_parses_it(text: str) -> None:
    assert tracing.parse_traceparent(text) == by_propagator(text)
    assert tracing.parse_traceparent(text.encode("latin-1")) == by_propagator(text)


def test_a_malformed_traceparent_is_no_context() -> None:
    assert tracing.parse_traceparent(b"00-zz-yy-01") is None
    assert tracing.parse_traceparent(b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01") is None  # zero trace id
    good = tracing.parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert good is not None and good.trace_flags.sampled and tracing.traceparent(good).endswith(b"-01")
    assert not tracing.is_sampled(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")


@pytest.fixture
def collector() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback HTTP server that keeps every OTLP body posted to /v1/traces."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert self.path == "/v1/traces"
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", bodies
    finally:
        server.shutdown()
        thread.join(5)


def test_otlp_from_the_environment_with_links_deciding_the_sample(
    collector: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, bodies = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")  # no root is sampled by the ratio…
    tracer = tracing.setup("tracing-test")
    try:
        assert tracer is not None
        sampled = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        unsampled = SpanContext(0x4321, 0x8765, is_remote=True, trace_flags=TraceFlags(0))
        with tracer.start_as_current_span("alone") as alone:
            assert not alone.is_recording()
        with tracer.start_as_current_span("batch", links=[Link(unsampled)]) as ignored:
            assert not ignored.is_recording()
        with tracer.start_as_current_span("batch", links=[Link(unsampled), Link(sampled)]) as batch:
            assert batch.is_recording()  # …but a batch holding a sampled record is
        assert isinstance(tracer, SdkTracer)
        assert tracer.span_processor.force_flush(10_000)
    finally:
        tracing.forget("tracing-test")
    request = ExportTraceServiceRequest.FromString(bodies[0])
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    spans = [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert service == "tracing-test" and [span.name for span in spans] == ["batch"]
    assert [link.span_id for link in spans[0].links] == [(0x8765).to_bytes(8, "big"),
                                                         (0x5678).to_bytes(8, "big")]


class Collect(logging.Handler):
    """Keeps each record as the JSON line the services would write."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(JsonFormatter().format(record))


def test_log_lines_of_a_batch_carry_its_trace_id() -> None:
    exporter = InMemorySpanExporter()
    tracer = tracing.setup("log-test", exporter)
    assert tracer is not None
    try:
        sampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        record = SimpleNamespace(topic="t", partition=0, offset=0, key=None, value=b"{}",
                                 headers=[("traceparent", sampled)])
        batch = batch_trace.BatchTrace(tracer, "log-test", [record])
        lines: list[str] = []
        handler = Collect(lines)
        logger = logging.getLogger("tests.tracing.batch")
        logger.addHandler(handler)
        try:
            with batch.stage("decode"):
                logger.warning("inside a stage")
            with batch.logged():
                logger.warning("inside the batch")
            logger.warning("outside")
        finally:
            logger.removeHandler(handler)
        batch.end()
    finally:
        tracing.forget("log-test")
    (batch_span,) = [s for s in exporter.get_finished_spans() if s.name == "log-test batch"]
    assert batch_span.context is not None
    expected = f"{batch_span.context.trace_id:032x}"
    assert [json.loads(line).get("trace_id") for line in lines] == [expected, expected, None]
    assert batch.headers_for(record) != [("traceparent", sampled)]  # its process span's context


def test_only_outputs_of_sampled_traces_carry_a_traceparent_into_a_record_batch() -> None:
    exporter = InMemorySpanExporter()
    tracer = tracing.setup("forward-test", exporter)
    assert tracer is not None
    try:
        unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        sampled = b"00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        records = [SimpleNamespace(headers=(("traceparent", unsampled),)), SimpleNamespace(headers=()),
                   SimpleNamespace(headers=[("other", b"x"), ("traceparent", b"00-too-short-01")]),
                   SimpleNamespace(headers=(("traceparent", sampled),)),
                   SimpleNamespace(headers=[("other", b"y")])]
        batch = batch_trace.BatchTrace(tracer, "forward-test", records)
        dropped, bare, malformed, carried, other = (batch.headers_for(record) for record in records)
        batch.end()
    finally:
        tracing.forget("forward-test")
    assert dropped is None  # an unsampled context leads nowhere in a viewer: not passed on
    (batch_span,) = [s for s in exporter.get_finished_spans() if s.name == "forward-test batch"]
    (process,) = [s for s in exporter.get_finished_spans() if s.name == "forward-test process"]
    assert batch_span.context is not None and process.context is not None
    assert [link.context.trace_id for link in batch_span.links] == [0x5BF92F3577B34DA6A3CE929D0E0E4736]
    own = [("traceparent", tracing.traceparent(batch_span.context))]
    assert bare == malformed == other == own  # no usable context of their own: the batch span's
    assert carried == [("traceparent", tracing.traceparent(process.context))]
    assert process.context.trace_id == 0x5BF92F3577B34DA6A3CE929D0E0E4736
    assert batch.trace_id_of(records[3]) == "5bf92f3577b34da6a3ce929d0e0e4736"
    assert [batch.trace_id_of(record) for record in records[:3] + records[4:]] == [None, None, None, None]
    builder = DefaultRecordBatchBuilder(2, 0, -1, -1, -1, False, 1 << 20)  # what the scorer's sender fills
    assert builder.append(0, timestamp=None, key=b"k", value=b"v", headers=carried) is not None


def test_a_batch_not_recorded_passes_sampled_contexts_on_as_they_came() -> None:
    exporter = InMemorySpanExporter()
    provider = SdkTracerProvider(sampler=ALWAYS_OFF)  # a sampler that records no batch, links or not
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    records = [SimpleNamespace(headers=(("traceparent", sampled),)), SimpleNamespace(headers=())]
    batch = batch_trace.BatchTrace(provider.get_tracer("t"), "quiet", records)
    batch.end()
    assert not batch.recording and not exporter.get_finished_spans()
    assert batch.output_headers == {id(records[0]): [("traceparent", sampled)]}


def test_a_span_line_holds_what_the_sdk_s_to_json_writes() -> None:
    exporter = InMemorySpanExporter()
    tracer = tracing.setup("line-test", exporter)
    assert tracer is not None
    try:
        sampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        record = SimpleNamespace(headers=[("traceparent", sampled)])
        batch = batch_trace.BatchTrace(tracer, "line-test", [record])
        with batch.stage("decode"):
            pass
        with pytest.raises(KeyError), batch.stage("inference"):
            raise KeyError("no model")
        batch.end(ValueError("bad batch"))
    finally:
        tracing.forget("line-test")
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} == {"line-test batch", "line-test process", "decode", "inference"}
    by_name = {s.name: s for s in spans}
    batch_span, failed = by_name["line-test batch"], by_name["inference"]
    assert batch_span.context is not None and failed.context is not None
    assert batch_span.start_time is not None and batch_span.end_time is not None
    # The children built finished are the batch span's, in its trace, and carry their failure.
    for child in (by_name["decode"], failed):
        assert child.parent == batch_span.context and child.context.trace_id == batch_span.context.trace_id
        assert child.start_time is not None and child.end_time is not None
        assert batch_span.start_time <= child.start_time <= child.end_time <= batch_span.end_time
    assert by_name["decode"].status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "KeyError: 'no model'"
    assert [(e.name, dict(e.attributes or {})) for e in failed.events] == [
        ("exception", {"exception.type": "KeyError", "exception.message": "'no model'"})]
    assert by_name["line-test process"].status.status_code is StatusCode.ERROR  # the batch failed
    for span in spans:
        line = span_line(span)
        assert line.endswith("\n") and "\n" not in line[:-1]
        assert json.loads(line) == json.loads(span.to_json(indent=None))


@given(st.one_of(
    st.integers(0, 2**63 - 1),  # every time_ns a span can have (up to 2262)
    st.integers(1_600_000_000 * 10**6, 2_000_000_000 * 10**6).map(lambda us: us * 1000 + 500),  # half a µs
    st.integers(1_600_000_000, 2_000_000_000).map(lambda s: s * 10**9 - 1),  # just below a whole second
))
def test_a_span_line_timestamp_is_the_sdk_s(nanoseconds: int) -> None:
    assert iso_time(nanoseconds) == ns_to_iso_str(nanoseconds)

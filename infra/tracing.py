"""OpenTelemetry tracing: set up from the standard OTEL_* variables, W3C context in Kafka record headers, and
one span per micro-batch linked to the contexts of its records.

Off unless the environment asks for traces (OTEL_TRACES_EXPORTER other than `none`, or an OTLP endpoint), and
OTEL_SDK_DISABLED is not true. While off, `setup` returns None, no SDK is imported and the hot paths check one
`None`. Micro-batches are traced the way the messaging conventions describe batch receiving: a root batch span
with a link to each distinct sampled context of its records, and per distinct sampled context a short
`process` span in the record's own trace (child of the producer's span, linked to the batch span), whose
context the outputs of those records carry on. The output of an unsampled record carries no traceparent: its
context leads nowhere in a trace viewer, and a ParentBased sampler downstream would not sample it either, so
passing it on would only carry ~70 bytes a record through one more Kafka hop, the producer's encoding and
the sink's decoding (at 1 % sampling, 99 % of predictions; docs/operations.md, "Tracing", measures it). A
record without a usable traceparent gets the batch span's context when the batch is recorded.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from infra.logging import LOG_TRACE_ID

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

TRACEPARENT = "traceparent"
TRACEPARENT_LENGTH = 55  # 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
Headers = list[tuple[str, bytes]]
"""Kafka record headers as aiokafka takes them."""

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACERS: dict[str, Tracer] = {}
CURRENT_BATCH: ContextVar[BatchTrace | None] = ContextVar("streamscore_batch_trace", default=None)
"""The batch being handled in this task (set by infra/consumer.py around the service's handler)."""


def enabled_by_env(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """The standard variables ask for traces: an exporter other than `none`, or an OTLP endpoint."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def exporter_from_env(service: str) -> SpanExporter:
    """`otlp` (HTTP/protobuf, OTEL_EXPORTER_OTLP_* variables) or `console` (JSON lines on stdout, or into the
    file STREAMSCORE_TRACES_FILE names; `{service}` and `{pid}` in it are filled in)."""
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip().lower() or "otlp"
    if name == "console":
        path = os.environ.get("STREAMSCORE_TRACES_FILE")
        # Open for the process's life: the exporter writes each exported span to it.
        target = path.format(service=service, pid=os.getpid()) if path else None
        out = open(target, "a", encoding="utf-8") if target else sys.stdout  # noqa: SIM115
        from infra.span_json import span_line

        return ConsoleSpanExporter(out=out, formatter=span_line)
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported here: use otlp, console or none")
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL"))
    if protocol not in (None, "", "http/protobuf"):
        raise ValueError(f"OTLP protocol {protocol!r} is not installed: use http/protobuf (port 4318)")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def sampler_from_env() -> Sampler:
    """OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, where a batch span with a sampled link is sampled."""
    from opentelemetry.sdk.trace import sampling

    name = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
    roots: dict[str, Sampler] = {"always_on": sampling.ALWAYS_ON, "always_off": sampling.ALWAYS_OFF,
                                 "traceidratio": sampling.TraceIdRatioBased(ratio)}
    base = name.removeprefix("parentbased_")
    if base not in roots:
        raise ValueError(f"OTEL_TRACES_SAMPLER={name!r} is not supported: use (parentbased_)always_on, "
                         "always_off or traceidratio")
    root = _follow_links(roots[base])
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def setup(service: str, exporter: SpanExporter | None = None) -> Tracer | None:
    """This service's tracer, from the environment (or exporting to `exporter`); None while tracing is off.

    One provider per service name, so in-process tests see each service under its own `service.name`.
    """
    if exporter is None and service in _TRACERS:
        return _TRACERS[service]
    if exporter is None and not enabled_by_env():
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # A batch links every distinct sampled context of its records; the SDK's default keeps 128.
    limits = SpanLimits(max_links=int(os.environ.get("OTEL_SPAN_LINK_COUNT_LIMIT") or 10_000))
    provider = TracerProvider(resource=Resource.create({"service.name": service}),
                              sampler=sampler_from_env(), span_limits=limits)
    if exporter is not None:  # tests: spans are there as soon as they end
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(exporter_from_env(service)))
    _TRACERS[service] = provider.get_tracer(f"streamscore.{service}")
    return _TRACERS[service]


def forget(service: str) -> None:
    """Drop a service's tracer (tests that set one up with their own exporter)."""
    _TRACERS.pop(service, None)


def active() -> bool:
    """Some service of this process traces."""
    return bool(_TRACERS)


def traceparent(context: SpanContext) -> bytes:
    """The W3C traceparent of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}".encode()


def parse_traceparent(value: bytes | str | None) -> SpanContext | None:
    """A valid remote span context, or None for a missing or malformed header (ignored, as W3C says)."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    context = trace.get_current_span(_PROPAGATOR.extract({TRACEPARENT: text})).get_span_context()
    return context if context.is_valid else None


def outgoing_headers() -> Headers | None:
    """Headers carrying the current span's context to the records published now; None when untraced."""
    if not _TRACERS:
        return None
    context = trace.get_current_span().get_span_context()
    return [(TRACEPARENT, traceparent(context))] if context.is_valid else None


_ODD_HEX = frozenset(b"13579bdfBDF")


def is_sampled(value: bytes) -> bool:
    """The sampled flag (bit 0 of the flags) of a version-00 traceparent, read without parsing the rest."""
    return len(value) == TRACEPARENT_LENGTH and value[-1] in _ODD_HEX


@contextlib.contextmanager
def span(service: str, name: str, **attributes: Any) -> Iterator[Span | None]:
    """A child span of the current one in `service`'s tracer; nothing at all while it does not trace."""
    tracer = _TRACERS.get(service)
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, attributes=attributes or None) as current:
        yield current


class BatchTrace:
    """The spans of one consumed micro-batch: the batch span, its stages, the per-context process spans."""

    def __init__(self, tracer: Tracer, service: str, records: Sequence[Any]) -> None:
        self._tracer = tracer
        self._started = time.time_ns()
        # One inlined pass over the batch (it runs for every record while tracing is on) that keeps, by
        # record identity, only what an output needs: the sampled traceparents and the records without a
        # usable one. An unsampled record, the common case at 1 %, leaves nothing behind (module doc).
        sampled: dict[int, bytes] = {}
        bare: list[int] = []
        counts: dict[bytes, int] = {}
        for record in records:
            for name, found in getattr(record, "headers", None) or ():
                if name == TRACEPARENT:
                    if len(found) != TRACEPARENT_LENGTH:  # malformed: as if absent
                        bare.append(id(record))
                    elif found[-1] in _ODD_HEX:  # is_sampled(), inlined
                        sampled[id(record)] = found
                        counts[found] = counts.get(found, 0) + 1
                    break
            else:
                bare.append(id(record))
        parents = {value: context for value in counts if (context := parse_traceparent(value)) is not None}
        trace_ids = {value: f"{context.trace_id:032x}" for value, context in parents.items()}
        self.trace_ids = {key: trace_ids[value] for key, value in sampled.items() if value in trace_ids}
        """The trace id (32 hex) of each record with a sampled, valid traceparent, by id(record)."""
        self.any_sampled = bool(parents)
        """Some record of the batch carries a sampled, valid traceparent."""
        links = [Link(context, {"streamscore.records": counts[value]}) for value, context in parents.items()]
        self.span = tracer.start_span(
            f"{service} batch", kind=SpanKind.CONSUMER, start_time=self._started, links=links,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                        "messaging.batch.message_count": len(records),
                        "streamscore.records_traced": sum(counts.values())},
        )
        self.recording = self.span.is_recording()
        # Only a recorded trace id goes into the logs: an unsampled one leads nowhere in the trace viewer.
        self.trace_id = f"{self.span.get_span_context().trace_id:032x}" if self.recording else None
        self._own = [(TRACEPARENT, traceparent(self.span.get_span_context()))] if self.recording else None
        self._process: list[Span] = []
        outgoing: dict[bytes, Headers] = {}
        if self.recording:
            batch_link = [Link(self.span.get_span_context())]
            for value, context in parents.items():
                process = tracer.start_span(
                    f"{service} process", context=trace.set_span_in_context(trace.NonRecordingSpan(context)),
                    kind=SpanKind.CONSUMER, start_time=self._started, links=batch_link,
                    attributes={"streamscore.records": counts[value]},
                )
                self._process.append(process)
                outgoing[value] = [(TRACEPARENT, traceparent(process.get_span_context()))]
        self._sampled, self._bare, self._outgoing = sampled, bare, outgoing
        self._headers: dict[int, Headers] | None = None
        self._ended = False

    @property
    def output_headers(self) -> dict[int, Headers]:
        """The headers of each consumed record's output, by id(record); a record absent here has an output
        without any (its context was unsampled, or the batch is not recorded and it had none).

        A sampled record's output carries its process span's context (or, in a batch not recorded, its own
        traceparent); one without a usable traceparent, the batch span's. Built on first use: only the
        scorer publishes outputs of its records.
        """
        if self._headers is None:
            own, outgoing = self._own, self._outgoing
            chosen: dict[int, Headers] = {} if own is None else dict.fromkeys(self._bare, own)
            for key, value in self._sampled.items():
                headers = outgoing.get(value)
                if headers is None and key in self.trace_ids:  # valid, in a batch not recorded: as it came
                    headers = [(TRACEPARENT, value)]  # a list: aiokafka's C record batch takes no tuple
                if (headers := headers or own) is not None:
                    chosen[key] = headers
            self._headers = chosen
        return self._headers

    def headers_for(self, record: Any) -> Headers | None:
        """Headers for the output of a consumed record (see `output_headers`)."""
        return self.output_headers.get(id(record))

    def trace_id_of(self, record: Any) -> str | None:
        """The trace id (32 hex) of a consumed record's sampled, valid traceparent; None otherwise."""
        return self.trace_ids.get(id(record))

    @contextlib.contextmanager
    def logged(self) -> Iterator[None]:
        """Log lines written inside carry the batch's trace id (no span)."""
        token = LOG_TRACE_ID.set(self.trace_id)
        try:
            yield
        finally:
            LOG_TRACE_ID.reset(token)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A child span of the batch span around one stage; log lines inside carry the batch's trace id."""
        token = LOG_TRACE_ID.set(self.trace_id)
        try:
            if not self.recording:
                yield
                return
            with self._tracer.start_as_current_span(name, context=trace.set_span_in_context(self.span)):
                yield
        finally:
            LOG_TRACE_ID.reset(token)

    def begin(self, name: str) -> Span | None:
        """A child span of the batch span that ends later, elsewhere (`close`)."""
        if not self.recording:
            return None
        return self._tracer.start_span(name, context=trace.set_span_in_context(self.span))

    def end(self, error: BaseException | None = None) -> None:
        """End the batch and its process spans (once); an error marks them failed."""
        if self._ended:
            return
        self._ended = True
        if not self.recording:
            return
        ended = time.time_ns()
        for current in [*self._process, self.span]:
            if error is not None:
                current.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:300]))
            current.end(end_time=ended)


def close(current: Span | None, error: BaseException | None = None) -> None:
    """End a span from `BatchTrace.begin` (None: untraced)."""
    if current is None:
        return
    if error is not None:
        current.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:300]))
    current.end()


def stage(batch: BatchTrace | None, name: str) -> contextlib.AbstractContextManager[None]:
    """`batch.stage(name)`, or nothing for an untraced batch."""
    return contextlib.nullcontext() if batch is None else batch.stage(name)


def logged(batch: BatchTrace | None) -> contextlib.AbstractContextManager[None]:
    """`batch.logged()`, or nothing for an untraced batch."""
    return contextlib.nullcontext() if batch is None else batch.logged()


def _follow_links(base: Sampler) -> Sampler:
    """A root sampler that samples a span linked to a sampled context (a batch holding a sampled record)
    and asks `base` otherwise, so a sampled request's trace never loses the batch spans it went through."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class FollowLinks(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                          attributes: Any = None, links: Sequence[Link] | None = None,
                          trace_state: Any = None) -> SamplingResult:
            if links and any(link.context.trace_flags.sampled for link in links):
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
            return base.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"FollowLinks{{{base.get_description()}}}"

    return FollowLinks()

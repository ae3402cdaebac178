"""OpenTelemetry tracing: set up from the standard OTEL_* variables, and W3C context in Kafka record headers
(the spans of a consumed micro-batch are infra/batch_trace.py's).

Off unless the environment asks for traces (OTEL_TRACES_EXPORTER other than `none`, or an OTLP endpoint), and
OTEL_SDK_DISABLED is not true. While off, `setup` returns None, no SDK is imported and the hot paths check one
`None`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, TraceFlags, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

TRACEPARENT = "traceparent"
TRACEPARENT_LENGTH = 55  # 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
Headers = list[tuple[str, bytes]]
"""Kafka record headers as aiokafka takes them."""

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACERS: dict[str, Tracer] = {}


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
    if len(text) == TRACEPARENT_LENGTH:  # the usual shape, parsed as the propagator would, far cheaper
        match = _TRACEPARENT_FIELDS.fullmatch(text)
        if match is None:
            return None
        version, trace_id, span_id, flags = match.groups()
        if version == "ff" or trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
            return None
        return SpanContext(int(trace_id, 16), int(span_id, 16), True, TraceFlags(int(flags, 16)))
    context = trace.get_current_span(_PROPAGATOR.extract({TRACEPARENT: text})).get_span_context()
    return context if context.is_valid else None


_TRACEPARENT_FIELDS = re.compile("([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE_ID, _ZERO_SPAN_ID = "0" * 32, "0" * 16


def outgoing_headers() -> Headers | None:
    """Headers carrying the current span's context to the records published now; None when untraced."""
    if not _TRACERS:
        return None
    context = trace.get_current_span().get_span_context()
    return [(TRACEPARENT, traceparent(context))] if context.is_valid else None


SAMPLED_LAST_DIGITS = frozenset(b"13579bdfBDF")
"""The last characters of a version-00 traceparent whose flags have the sampled bit (bit 0) set."""


def is_sampled(value: bytes) -> bool:
    """The sampled flag (bit 0 of the flags) of a version-00 traceparent, read without parsing the rest."""
    return len(value) == TRACEPARENT_LENGTH and value[-1] in SAMPLED_LAST_DIGITS


@contextlib.contextmanager
def span(service: str, name: str, **attributes: Any) -> Iterator[Span | None]:
    """A child span of the current one in `service`'s tracer; nothing at all while it does not trace."""
    tracer = _TRACERS.get(service)
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, attributes=attributes or None) as current:
        yield current


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

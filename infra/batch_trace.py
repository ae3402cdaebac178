"""The spans of one consumed micro-batch, traced the way the messaging conventions describe batch receiving.

A root batch span with a link to each distinct sampled context of its records, and per distinct sampled
context a short `process` span in the record's own trace (child of the producer's span, linked to the batch
span), whose context the outputs of those records carry on. The output of an unsampled record carries no
traceparent: its context leads nowhere in a trace viewer, and a ParentBased sampler downstream would not
sample it either, so passing it on would only carry ~70 bytes a record through one more Kafka hop, the
producer's encoding and the sink's decoding (at 1 % sampling, 99 % of predictions; docs/operations.md,
"Tracing", measures it). A record without a usable traceparent gets the batch span's context when the batch
is recorded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import filterfalse
from operator import attrgetter
from typing import TYPE_CHECKING, Any, cast

from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer

from infra.logging import LOG_TRACE_ID
from infra.tracing import (
    SAMPLED_LAST_DIGITS,
    TRACEPARENT,
    TRACEPARENT_LENGTH,
    Headers,
    parse_traceparent,
    traceparent,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.trace import Tracer as SdkTracer

HEADERS = attrgetter("headers")
"""A consumed record's headers (aiokafka's records always have the attribute, empty when none came)."""

CURRENT_BATCH: ContextVar[BatchTrace | None] = ContextVar("streamscore_batch_trace", default=None)
"""The batch being handled in this task (set by infra/consumer.py around the service's handler)."""


class BatchTrace:
    """The spans of one consumed micro-batch: the batch span, its stages, the per-context process spans.

    The batch span is the SDK's (its sampler decides, from the links). Its children are sampled with it, so
    they are built finished, as the SDK's `ReadableSpan`, and go to the tracer's span processor as they end:
    at 1 % head sampling nearly every batch of a few hundred records holds a sampled record, and a child
    through `start_span` costs several times as much (docs/operations.md, "What tracing costs").
    """

    def __init__(self, tracer: Tracer, service: str, records: Sequence[Any]) -> None:
        self._started = time.time_ns()
        # One inlined pass over the records with headers (it runs for each of them while tracing is on)
        # that keeps, by record identity, only what an output needs: the sampled traceparents and the
        # records without a usable one. An unsampled record, the common case at 1 %, leaves nothing behind
        # (module doc); one without any header (in the sink, 99 % of the predictions) is skipped in C, and
        # `output_headers` finds it again only in a recorded batch that had some.
        sampled: dict[int, bytes] = {}
        unusable: list[int] = []  # with headers, but no usable traceparent among them
        counts: dict[bytes, int] = {}
        carrying = list(filter(HEADERS, records))
        for record in carrying:
            for name, found in record.headers:
                if name == TRACEPARENT:
                    if len(found) != TRACEPARENT_LENGTH:  # malformed: as if absent
                        unusable.append(id(record))
                    elif found[-1] in SAMPLED_LAST_DIGITS:  # is_sampled(), inlined
                        sampled[id(record)] = found
                        counts[found] = counts.get(found, 0) + 1
                    break
            else:
                unusable.append(id(record))
        parents = {value: context for value in counts if (context := parse_traceparent(value)) is not None}
        trace_ids = {value: f"{context.trace_id:032x}" for value, context in parents.items()}
        self.trace_ids = {key: trace_ids[value] for key, value in sampled.items() if value in trace_ids}
        """The trace id (32 hex) of each record with a sampled, valid traceparent, by id(record)."""
        links = [Link(context, {"streamscore.records": counts[value]}) for value, context in parents.items()]
        self.span = tracer.start_span(
            f"{service} batch", kind=SpanKind.CONSUMER, start_time=self._started, links=links,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                        "messaging.batch.message_count": len(records),
                        "streamscore.records_traced": sum(counts.values())},
        )
        self.recording = self.span.is_recording()
        context = self.span.get_span_context()
        # Only a recorded trace id goes into the logs: an unsampled one leads nowhere in the trace viewer.
        self.trace_id = f"{context.trace_id:032x}" if self.recording else None
        self._own = [(TRACEPARENT, traceparent(context))] if self.recording else None
        self._children = Children(tracer, self.span) if self.recording else None
        self._process: list[tuple[SpanContext, SpanContext, int]] = []
        outgoing: dict[bytes, Headers] = {}
        if self._children is not None:
            for value, parent in parents.items():
                own = self._children.context_under(parent)
                self._process.append((parent, own, counts[value]))
                outgoing[value] = [(TRACEPARENT, traceparent(own))]
        self._service = service
        self._records, self._sampled, self._unusable, self._outgoing = records, sampled, unusable, outgoing
        self._headerless = len(carrying) != len(records)
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
            chosen: dict[int, Headers] = {}
            if own is not None:  # the records without a usable traceparent: with or without other headers
                chosen = dict.fromkeys(self._unusable, own)
                if self._headerless:
                    chosen.update(dict.fromkeys(map(id, filterfalse(HEADERS, self._records)), own))
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
        opened = self.begin(name)
        error: BaseException | None = None
        try:
            yield
        except BaseException as raised:
            error = raised
            raise
        finally:
            close(opened, error)
            LOG_TRACE_ID.reset(token)

    def begin(self, name: str) -> Opened | None:
        """A child span of the batch span that ends later, elsewhere (`close`)."""
        return None if self._children is None else Opened(self._children, name, time.time_ns())

    def end(self, error: BaseException | None = None) -> None:
        """End the batch and its process spans (once); an error marks them failed."""
        if self._ended:
            return
        self._ended = True
        if self._children is None:
            return
        ended = time.time_ns()
        link = (Link(self.span.get_span_context()),)
        for parent, own, count in self._process:
            self._children.emit(f"{self._service} process", self._started, ended, error, context=own,
                                parent=parent, kind=SpanKind.CONSUMER, links=link,
                                attributes={"streamscore.records": count})
        if error is not None:
            self.span.set_status(failed(error))
        self.span.end(end_time=ended)


class Children:
    """The children of one recorded batch span, handed finished to its tracer's span processor."""

    def __init__(self, tracer: Tracer, batch: Span) -> None:
        # A recording span comes from the SDK's tracer: the processor it ends its own spans into and the
        # id generator it draws them from are that tracer's.
        sdk = cast("SdkTracer", tracer)
        self._processor = sdk.span_processor
        self._new_span_id = sdk.id_generator.generate_span_id
        self._batch = cast("ReadableSpan", batch)
        self._context = batch.get_span_context()
        from opentelemetry.sdk.trace import Event, ReadableSpan  # the SDK: imported only while tracing

        self._span, self._event = ReadableSpan, Event

    def context_under(self, parent: SpanContext) -> SpanContext:
        """A new span context in `parent`'s trace, sampled as it is."""
        span_id = self._new_span_id()
        return SpanContext(parent.trace_id, span_id, False, parent.trace_flags, parent.trace_state)

    def emit(self, name: str, started: int, ended: int, error: BaseException | None = None, *,
             context: SpanContext | None = None, parent: SpanContext | None = None,
             kind: SpanKind = SpanKind.INTERNAL, links: Sequence[Link] = (),
             attributes: dict[str, Any] | None = None) -> None:
        """A finished span, by default a new child of the batch span, to the span processor."""
        status, events = UNSET, list["Event"]()
        if error is not None:
            status, events = failed(error), [self._event("exception", {
                "exception.type": type(error).__name__, "exception.message": str(error)[:300]}, ended)]
        self._processor.on_end(self._span(
            name, context or self.context_under(self._context), parent or self._context,
            self._batch.resource, attributes or {}, events, links, kind, status=status, start_time=started,
            end_time=ended, instrumentation_scope=self._batch.instrumentation_scope,
        ))


@dataclass
class Opened:
    """A child span of a batch begun and not yet ended."""

    children: Children
    name: str
    started: int


UNSET = Status(StatusCode.UNSET)


def failed(error: BaseException) -> Status:
    """The status of a span that ended in `error`."""
    return Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:300])


def close(opened: Opened | None, error: BaseException | None = None) -> None:
    """End a span from `BatchTrace.begin` (None: untraced); an error marks it failed."""
    if opened is not None:
        opened.children.emit(opened.name, opened.started, time.time_ns(), error)


def stage(batch: BatchTrace | None, name: str) -> contextlib.AbstractContextManager[None]:
    """`batch.stage(name)`, or nothing for an untraced batch."""
    return contextlib.nullcontext() if batch is None else batch.stage(name)


def logged(batch: BatchTrace | None) -> contextlib.AbstractContextManager[None]:
    """`batch.logged()`, or nothing for an untraced batch."""
    return contextlib.nullcontext() if batch is None else batch.logged()

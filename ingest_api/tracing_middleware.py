"""Per-request W3C trace context: a server span continuing the caller's `traceparent`, named in the answer.

Installed only when tracing is on (infra/tracing.py), outermost, so it times everything the API does for the
request, the fast scoring path included. A malformed `traceparent` is ignored (W3C): the request starts a
trace of its own and is served as usual. Records the request publishes carry the span's context
(ingest_api/publisher.py, via infra/tracing.outgoing_headers).
"""

from __future__ import annotations

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.logging import LOG_TRACE_ID
from infra.tracing import TRACEPARENT, parse_traceparent, traceparent

_TRACEPARENT = TRACEPARENT.encode()


class TracingMiddleware:
    """One SERVER span per HTTP request, child of the caller's context when it sends a valid one."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Open the span, answer with its traceparent, end it with the status."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((value for name, value in scope["headers"] if name == _TRACEPARENT), None)
        parent = parse_traceparent(incoming)
        parent_context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
        method = scope["method"]
        span = self.tracer.start_span(
            method, context=parent_context, kind=SpanKind.SERVER,  # named by the route once known (semconv)
            attributes={"http.request.method": method, "url.path": scope["path"]},
        )
        own = span.get_span_context()
        answer = traceparent(own)
        token = context.attach(trace.set_span_in_context(span))
        log_token = LOG_TRACE_ID.set(f"{own.trace_id:032x}" if own.trace_flags.sampled else None)

        async def send_with_context(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                message["headers"] = [*message.get("headers", []), (_TRACEPARENT, answer)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except BaseException as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            route = scope.get("route")
            if route is not None and hasattr(route, "path"):  # a template: /api/v1/predictions/{customer_id}
                span.update_name(f"{method} {route.path}")
                span.set_attribute("http.route", route.path)
            span.end()
            LOG_TRACE_ID.reset(log_token)
            context.detach(token)

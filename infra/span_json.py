"""One JSON line per finished span, with the fields and values of the SDK's `ReadableSpan.to_json` (what
bench/render_trace.py reads), at about a fifth of its cost: the resource's part is formatted once per
resource instead of once per span (to_json dumps it to text and parses it back each time), a timestamp's
date and time of day once per second, and orjson writes the line. The console exporter (infra/tracing.py)
runs it for every recorded span.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

_RESOURCES: dict[int, tuple[Resource, dict[str, Any]]] = {}
"""Each resource's formatted part by id(resource), with the resource itself (kept alive: its id stays its)."""


def span_line(span: ReadableSpan) -> str:
    """The span as one JSON line, newline included."""
    parent = span.parent
    status = {"status_code": span.status.status_code.name}
    if span.status.description:
        status["description"] = span.status.description
    line = {
        "name": span.name,
        "context": context_fields(span.context) if span.context else None,
        "kind": str(span.kind),
        "parent_id": f"0x{parent.span_id:016x}" if parent is not None else None,
        "start_time": iso_time(span.start_time) if span.start_time else None,
        "end_time": iso_time(span.end_time) if span.end_time else None,
        "status": status,
        "attributes": dict(span.attributes) if span.attributes is not None else None,
        "events": [{"name": event.name, "timestamp": iso_time(event.timestamp),
                    "attributes": dict(event.attributes) if event.attributes is not None else None}
                   for event in span.events],
        "links": [{"context": context_fields(link.context),
                   "attributes": dict(link.attributes) if link.attributes is not None else None}
                  for link in span.links],
        "resource": resource_fields(span.resource),
    }
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE).decode()


def context_fields(context: SpanContext) -> dict[str, str]:
    """A span context as to_json writes it."""
    state = context.trace_state
    return {"trace_id": f"0x{context.trace_id:032x}", "span_id": f"0x{context.span_id:016x}",
            "trace_state": repr(state) if state else "[]"}  # an empty one's repr, the usual case


_SECONDS: dict[int, str] = {}
"""`YYYY-mm-ddTHH:MM:SS` of recent whole seconds since the epoch (UTC); cleared when it grows large."""


def iso_time(nanoseconds: int) -> str:
    """The SDK's `ns_to_iso_str` (`datetime.fromtimestamp(ns / 1e9, utc)` to the microsecond, rounded half
    to even, as `%Y-%m-%dT%H:%M:%S.%fZ`) without a datetime and strftime a call: a span has two."""
    fraction, whole = math.modf(nanoseconds / 1e9)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        micro -= 1_000_000
        whole += 1
    second = int(whole)
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        prefix = _SECONDS[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{prefix}.{micro:06d}Z"


def resource_fields(resource: Resource) -> dict[str, Any]:
    """A resource as to_json writes it, formatted once."""
    known = _RESOURCES.get(id(resource))
    if known is None or known[0] is not resource:
        known = _RESOURCES[id(resource)] = (resource, {"attributes": dict(resource.attributes),
                                                       "schema_url": resource.schema_url})
    return known[1]

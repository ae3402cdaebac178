"""Prometheus metrics of one API app: requests and latency per route template, dynamic-batch sizes.

Label sets are bounded whatever clients send: a method outside `METHODS` is `other`, and a 405 or an
unmatched path is route `<unmatched>` (one anonymous request per method per route made a series each:
the exposition grew from 71 KB to 1.9 MB). The rendering is reused for `cache_s` and built off the
event loop, one at a time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"
MAX_LABEL_SETS = 2000
"""A backstop: past this many (method, route, status) sets, new ones count under (other, <unmatched>)."""


class ApiMetrics:
    """Collectors in a registry of their own, so several apps in one process (tests) do not clash."""

    def __init__(self, cache_s: float = 1.0) -> None:
        self.cache_s = cache_s
        self._rendered = b""
        self._rendered_at = -float("inf")
        self._rendering: asyncio.Future[bytes] | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "streamscore_api_requests_total", "HTTP requests by route template and status.",
            ("method", "route", "status"), registry=self.registry,
        )
        self.latency = Histogram(
            "streamscore_api_request_duration_seconds", "Time from request start to the last response byte.",
            ("method", "route"), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "streamscore_api_dynamic_batch_size", "Requests scored together by one engine call (sync path).",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.events_published = Counter(
            "streamscore_api_events_published_total", "Feature events acknowledged by the broker.",
            ("topic",), registry=self.registry,
        )
        self.sync_publish_failures = Counter(
            "streamscore_api_sync_publish_failures_total",
            "Sync predictions answered but not acknowledged on predictions.v1 (so not stored).",
            registry=self.registry,
        )
        self.rows_rejected = Counter(
            "streamscore_api_batch_rows_rejected_total", "CSV rows rejected at upload.",
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def render_cached(self) -> tuple[bytes, str]:
        """The exposition text at most `cache_s` old, rendered in a thread by one caller at a time."""
        if time.monotonic() - self._rendered_at >= self.cache_s:
            if self._rendering is None:
                self._rendering = asyncio.ensure_future(self._render())
            return await asyncio.shield(self._rendering), CONTENT_TYPE_LATEST
        return self._rendered, CONTENT_TYPE_LATEST

    async def _render(self) -> bytes:
        try:
            body: bytes = await asyncio.to_thread(generate_latest, self.registry)
            self._rendered, self._rendered_at = body, time.monotonic()
            return body
        finally:
            self._rendering = None


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request, labelled by the matched route's path template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and count it once the response has started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            method = scope.get("method", "")
            key = (method if method in METHODS else "other", _template(scope, status), status)
            children = self._children.get(key)
            if children is None:
                children = self._children_for(key)
            children[0].inc()
            children[1].observe(time.perf_counter() - started)

    def _children_for(self, key: tuple[str, str, int]) -> tuple[Any, Any]:
        # Label look-ups cost more than the increments; the label sets are bounded, so keep them.
        method, template, status = key
        if len(self._children) >= MAX_LABEL_SETS:
            method, template = "other", UNMATCHED
        children = (self.metrics.requests.labels(method, template, str(status)),
                    self.metrics.latency.labels(method, template))
        if len(self._children) < MAX_LABEL_SETS:
            self._children[key] = children
        return children


def _template(scope: Scope, status: int) -> str:
    """The route's path template; unmatched paths and 405s share one label (scanners, junk methods)."""
    if status == 405:
        return UNMATCHED
    # Plain Starlette routes (FastAPI's /openapi.json) set no "route", only "endpoint": a fixed path.
    template: str | None = getattr(scope.get("route"), "path", None)
    if template:
        return template
    return scope["path"] if "endpoint" in scope and not scope.get("path_params") else UNMATCHED

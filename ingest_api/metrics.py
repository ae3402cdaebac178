"""Prometheus metrics of one API app: requests and latency per route template, dynamic-batch sizes."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ApiMetrics:
    """Collectors in a registry of their own, so several apps in one process (tests) do not clash."""

    def __init__(self) -> None:
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
            route = scope.get("route")
            # Unmatched paths share one label, so scanners cannot blow up the label cardinality. Plain
            # Starlette routes (FastAPI's /openapi.json) set no "route", only "endpoint": a fixed path.
            template = getattr(route, "path", None) or (
                scope["path"] if "endpoint" in scope and not scope.get("path_params") else "<unmatched>")
            key = (scope.get("method", ""), template, status)
            children = self._children.get(key)
            if children is None:
                # Label look-ups cost more than the increments; the label sets are few, so keep them.
                children = (self.metrics.requests.labels(key[0], template, str(status)),
                            self.metrics.latency.labels(key[0], template))
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)

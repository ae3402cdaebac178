"""/metrics after a flood of junk: label sets stay bounded, and a scrape costs one rendering a second."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx

from tests.helpers.api import Api

# Every method httptools (llhttp) parses: what a client can send through the real server.
LLHTTP_METHODS = [
    "DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "COPY", "LOCK", "MKCOL", "MOVE",
    "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL", "REPORT", "MKACTIVITY",
    "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PATCH", "PURGE", "MKCALENDAR",
    "LINK", "UNLINK", "SOURCE", "QUERY",
]


def series(exposition: bytes) -> set[str]:
    """The request-counter series (one line each) of an exposition text."""
    return {line.rsplit(" ", 1)[0] for line in exposition.decode().splitlines()
            if line.startswith("streamscore_api_requests_total{")}


async def flood(api: Api, methods: list[str], junk_paths: int) -> int:
    """One anonymous request per method per route, then `junk_paths` unmatched paths; the requests sent."""
    paths = [path.replace("{", "x").replace("}", "") for path in templates(api)]
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://api.test")
    sent = 0
    async with anonymous:
        for path in paths:
            await asyncio.gather(*(anonymous.request(method, path) for method in methods))
            sent += len(methods)
        for _ in range(junk_paths):
            await anonymous.get(f"/scan/{uuid.uuid4().hex}")
            sent += 1
    return sent


def templates(api: Api) -> set[str]:
    """Every route's path template: the OpenAPI paths and the pages outside the schema."""
    return {*api.app.openapi()["paths"], "/docs", "/redoc", "/openapi.json", "/dashboard", "/asyncapi.html"}


def render_ms(api: Api) -> tuple[float, int]:
    """(ms to render the exposition, its bytes): the cost of one uncached scrape."""
    started = time.perf_counter()
    body, _ = api.app.state.metrics.render()
    return (time.perf_counter() - started) * 1000, len(body)


async def test_a_junk_flood_adds_a_bounded_number_of_series(api: Api) -> None:
    await flood(api, ["GET", "POST"], 0)
    quiet_ms, quiet_bytes = render_ms(api)
    first = series(api.app.state.metrics.render()[0])
    sent = await flood(api, LLHTTP_METHODS[: len(LLHTTP_METHODS) // 2], 300)
    after_first = series(api.app.state.metrics.render()[0])
    sent += await flood(api, LLHTTP_METHODS[len(LLHTTP_METHODS) // 2:], 300)
    flooded_ms, flooded_bytes = render_ms(api)
    after_second = series(api.app.state.metrics.render()[0])
    print(f"\nMETRICS FLOOD: {sent} anonymous junk requests; series {len(first)} -> {len(after_first)} -> "
          f"{len(after_second)}; exposition {quiet_bytes / 1024:.0f} KB -> {flooded_bytes / 1024:.0f} KB; "
          f"render {quiet_ms:.1f} -> {flooded_ms:.1f} ms")
    assert len(after_second - after_first) <= 8  # a few new (method, status) pairs, not one per request
    routes = templates(api) | {"<unmatched>"}
    for line in after_second:
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:-1].split(","))
        assert labels["method"].strip('"') in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                                               "other"}, line
        assert labels["route"].strip('"') in routes, line


async def test_metrics_are_rendered_at_most_once_a_second(api: Api) -> None:
    reader = await api.key_with("read")
    first = await api.client.get("/metrics", headers=reader)
    await api.client.get("/health")
    cached = await asyncio.gather(*(api.client.get("/metrics", headers=reader) for _ in range(20)))
    await asyncio.sleep(api.settings.metrics_cache_s)
    fresh = await api.client.get("/metrics", headers=reader)
    assert all(response.text == first.text for response in cached)
    assert 'route="/health"' not in first.text and 'route="/health"' in fresh.text

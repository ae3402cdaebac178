"""Swagger UI, ReDoc and the AsyncAPI page render from the API alone, in Chromium with the network cut off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import generate_latest

from ingest_api.main import create_app
from ingest_api.settings import ApiSettings
from tests.helpers.browser import browser_session, wait_until
from tests.helpers.served import served_without_lifespan

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(ApiSettings())


@pytest.fixture(scope="module")
def docs_url(app: FastAPI) -> Iterator[str]:
    """The API app served without its lifespan: the documentation routes need no broker or database."""
    with served_without_lifespan(app) as url:
        yield url


@pytest.fixture(scope="module")
def offline_browser() -> Iterator[Any]:
    with browser_session(offline=True) as driver:
        yield driver


def _operations(url: str) -> int:
    paths = httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    return sum(1 for item in paths.values() for method in item if method in HTTP_METHODS)


def _resources(browser: Any) -> list[str]:
    """Every script, stylesheet and request the page loaded (ReDoc's decorative badge image aside)."""
    names: list[str] = browser.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.initiatorType !== 'img')"
        ".map(e => e.name)")
    return names


def test_the_offline_browser_really_is_offline(offline_browser: Any) -> None:
    from selenium.common.exceptions import WebDriverException

    with pytest.raises(WebDriverException, match="ERR_"):  # e.g. net::ERR_PROXY_CONNECTION_FAILED
        offline_browser.get("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css")


def test_swagger_ui_renders_every_operation_offline(docs_url: str, offline_browser: Any) -> None:
    expected = _operations(docs_url)
    offline_browser.get(f"{docs_url}/docs")
    wait_until(lambda: len(offline_browser.find_elements("css selector", ".opblock")) >= expected, 30,
               "the operations")
    assert len(offline_browser.find_elements("css selector", ".opblock")) == expected > 10
    assert "/api/v1/events" in offline_browser.find_element("tag name", "body").text
    assert all(name.startswith(docs_url) for name in _resources(offline_browser))


def test_redoc_renders_offline(docs_url: str, offline_browser: Any) -> None:
    offline_browser.get(f"{docs_url}/redoc")
    wait_until(lambda: "/api/v1/events" in offline_browser.find_element("tag name", "body").text, 30,
               "ReDoc to render the operations")
    assert all(name.startswith(docs_url) for name in _resources(offline_browser))


def test_asyncapi_is_json_for_clients_and_a_page_for_browsers(docs_url: str, offline_browser: Any) -> None:
    document = httpx.get(f"{docs_url}/asyncapi", timeout=30).json()
    assert document["asyncapi"].startswith("3.")
    page = httpx.get(f"{docs_url}/asyncapi", headers={"Accept": "text/html"}, timeout=30)
    assert page.headers["content-type"].startswith("text/html")
    offline_browser.get(f"{docs_url}/asyncapi.html")
    body = wait_until(lambda: offline_browser.find_element("tag name", "body").text, 20, "the AsyncAPI page")
    for channel in document["channels"].values():
        assert channel["address"] in body
    for schema in ("Prediction", "FeatureEvent", "DeadLetter"):
        assert offline_browser.find_elements("id", f"schema-{schema}")
    assert "customer_id" in body and "receive" in body and "send" in body


def test_docs_and_dashboard_pages_have_their_own_metrics_labels(docs_url: str, app: FastAPI) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/dashboard", "/asyncapi.html", "/no/such/page"):
        httpx.get(docs_url + path, timeout=30)
    metrics = generate_latest(app.state.metrics.registry).decode()
    for route in ("/docs", "/redoc", "/openapi.json", "/dashboard", "/asyncapi.html"):
        assert f'route="{route}",status="200"' in metrics, route
    assert 'route="<unmatched>",status="404"' in metrics

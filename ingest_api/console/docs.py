"""API documentation served by the API itself, offline: Swagger UI, ReDoc and the AsyncAPI page.

The Swagger UI and ReDoc bundles come from the pinned `fastapi-offline` wheel (MIT; Swagger UI is
Apache-2.0, ReDoc MIT, their notices ship inside the bundles), so `/docs` works on a closed network.
"""

from __future__ import annotations

import asyncio
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from ingest_api.console.asyncapi_page import render_asyncapi
from ingest_api.settings import ApiSettings

ASSETS_PATH = "/docs/assets"
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
CACHE = {"Cache-Control": "public, max-age=86400"}

router = APIRouter()


def assets_dir() -> Path:
    """The static directory of the fastapi-offline wheel (found without importing it)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the fastapi-offline package is missing; reinstall streamscore")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for the OpenAPI document, with its scripts served from here."""
    app = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} — Swagger UI",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        oauth2_redirect_url=OAUTH2_REDIRECT,
    )


@router.get(OAUTH2_REDIRECT, include_in_schema=False)
async def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc for the OpenAPI document, without web fonts from a CDN."""
    app = request.app
    return get_redoc_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} — ReDoc",
        redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )


@router.get(ASSETS_PATH + "/{name}", include_in_schema=False)
async def docs_asset(name: str) -> FileResponse:
    """One of the documentation bundles."""
    if name not in ASSET_TYPES:
        raise HTTPException(404, detail=f"no documentation asset {name!r}")
    return FileResponse(assets_dir() / name, media_type=ASSET_TYPES[name], headers=CACHE)


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


@dataclass(frozen=True)
class AsyncApiDocs:
    """The AsyncAPI document as JSON and as a page, built once per process (15 ms of CPU each time)."""

    json: bytes
    html: bytes


def build_asyncapi_docs(settings: ApiSettings) -> AsyncApiDocs:
    """Both renderings, with the configured public broker name in `servers` (never the internal one)."""
    from infra.asyncapi import asyncapi_document

    public = settings.model_copy(update={"kafka_bootstrap": settings.public_kafka_bootstrap})
    document: dict[str, Any] = asyncapi_document(public)
    return AsyncApiDocs(json=orjson.dumps(document), html=render_asyncapi(document).encode())


async def asyncapi_docs(request: Request) -> AsyncApiDocs:
    """This app's documents, built in a thread on first use by one caller; every other waits for it."""
    state = request.app.state
    building: asyncio.Future[AsyncApiDocs] | None = getattr(state, "asyncapi_docs", None)
    if building is None:
        building = asyncio.ensure_future(asyncio.to_thread(build_asyncapi_docs, state.settings))
        state.asyncapi_docs = building
    try:
        return await asyncio.shield(building)
    except Exception:
        if state.asyncapi_docs is building:
            state.asyncapi_docs = None  # a failed build is retried by the next request
        raise


@router.get("/asyncapi", tags=["ops"],
            summary="AsyncAPI 3.0 document of the Kafka topics",
            description="Channels, messages and JSON schemas of customer-features.v1, batch-rows.v1, "
            "predictions.v1 and dead-letter.v1, generated from the contracts in `schemas/`. JSON by "
            "default; a browser (`Accept: text/html`) gets the same document as a page, also at "
            "`/asyncapi.html`. Public, like /docs; `servers` names `STREAMSCORE_PUBLIC_KAFKA_BOOTSTRAP`.")
async def asyncapi(request: Request) -> Response:
    """The AsyncAPI document (also `streamscore docs asyncapi`)."""
    docs = await asyncapi_docs(request)
    if _wants_html(request):
        return HTMLResponse(docs.html, headers={"Vary": "Accept"})
    return Response(docs.json, media_type="application/json", headers={"Vary": "Accept"})


@router.get("/asyncapi.html", include_in_schema=False)
async def asyncapi_page(request: Request) -> HTMLResponse:
    """The AsyncAPI document as a page: channels, operations, messages and schemas."""
    return HTMLResponse((await asyncapi_docs(request)).html)

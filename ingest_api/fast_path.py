"""A pure-ASGI fast path for the hottest route, `POST /api/v1/predict/single`.

FastAPI's per-request machinery (route matching over every route, the dependency graph, Request
objects, response validation) cost about half of the API's CPU per sync prediction. This layer sits
inside the body-limit and metrics middlewares and serves that one route directly with the same
semantics, in the same order as the FastAPI route:

1. the principal the auth middleware stored, rate-limited, holding the `predict` scope, before any
   body byte is read (`ingest_api.auth.dependencies.authorize`: 401/429/403);
2. body read and JSON-decoded (a body that is not a JSON object is handed to the normal route,
   replayed, so the answer to anything unusual is exactly FastAPI's);
3. body validation with `ScoreRequest` (422 naming the field, via `ingest_api.errors`);
4. the route handler itself (`ingest_api.routes.scoring.predict_payload`).

The route stays registered with FastAPI, so the OpenAPI document is unchanged.
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest_api.auth.dependencies import authorize
from ingest_api.auth.principals import Principal
from ingest_api.bodies import ScoreRequest
from ingest_api.errors import ApiError, error_response, validation_error
from ingest_api.routes.scoring import PREDICT_SINGLE_PATH, predict_payload

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import Response

    from ingest_api.deps import Services

log = logging.getLogger(__name__)

_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastPathMiddleware:
    """Serves `POST /api/v1/predict/single` without Starlette routing or FastAPI dependency solving."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._route: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Take the hot route; pass everything else (and anything unusual) to the app."""
        if (
            scope["type"] != "http"
            or scope["path"] != PREDICT_SINGLE_PATH
            or scope["method"] != "POST"
        ):
            await self.app(scope, receive, send)
            return
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
                break
        if self._route is None:
            self._route = _find_route(self.fastapi_app)
        scope["route"] = self._route  # the metrics middleware labels by the route template
        services: Services = self.fastapi_app.state.services
        try:
            # Before the body: an anonymous caller never gets a byte of it read or parsed.
            principal = await authorize(self.fastapi_app.state.security, scope["state"], "predict")
            body = await _read_body(receive)
        except Exception as error:  # 401/429/403, or the body limit counted while reading (413)
            await _send_response(await self._error_response(scope, error), scope, receive, send)
            return
        data = _decode_json(body, content_type)
        if type(data) is not dict:
            # Empty, non-JSON, malformed or not an object: FastAPI's own answer, from the replayed body.
            await self.app(scope, _replay(body, receive), send)
            return
        try:
            payload = await self._handle(services, data, principal)
        except Exception as error:
            await _send_response(await self._error_response(scope, error), scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(payload)).encode()), *_JSON_HEADERS]})
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    async def _handle(services: Services, data: Any, principal: Principal) -> bytes:
        try:
            request = ScoreRequest.model_validate(data)
        except ValidationError as error:
            raise validation_error(error) from None
        return await predict_payload(services, request, principal)

    async def _error_response(self, scope: Scope, error: Exception) -> Response:
        if isinstance(error, ApiError):
            return error_response(error.status, error.message, code=error.code, details=error.details,
                                  headers=error.headers)
        if isinstance(error, StarletteHTTPException):
            return _http_error(error)
        # Anything else goes to the handler the app registered for it (dependency down -> 503);
        # unhandled errors propagate to Starlette's ServerErrorMiddleware (500), as on the normal path.
        handlers = self.fastapi_app.exception_handlers
        for cls in type(error).__mro__:
            if cls is Exception:
                break
            handler = handlers.get(cls)
            if handler is not None:
                from starlette.requests import Request

                result = handler(Request(scope), error)
                response: Response = await result if inspect.isawaitable(result) else result
                return response
        raise error


def _http_error(error: StarletteHTTPException) -> Response:
    message = error.detail if isinstance(error.detail, str) else str(error.detail)
    return error_response(error.status_code, message, headers=getattr(error, "headers", None))


async def _send_response(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def _decode_json(body: bytes, content_type: str | None) -> Any:
    """The decoded body when FastAPI would decode it the same way, else None (let FastAPI answer)."""
    if not body or (content_type is not None and content_type != "application/json"
                     and content_type.partition(";")[0].strip().lower() != "application/json"):
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses what json accepts (e.g. integers past 64 bits, NaN); FastAPI uses json.
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # nested past the parser's depth: FastAPI answers 400
            return None
    except RecursionError:
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _find_route(app: FastAPI) -> Any:
    """The APIRoute FastAPI itself puts in `scope["route"]` for the hot path (the metrics label)."""
    for route in _all_routes(app):
        methods = getattr(route, "methods", None) or ()
        if getattr(route, "path", None) == PREDICT_SINGLE_PATH and "POST" in methods:
            return route
    return None


def _all_routes(app: FastAPI) -> list[Any]:
    """Every route, through included routers: FastAPI 0.165 keeps those as one entry each in `routes`."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI copies included routes into app.router.routes
        return list(app.router.routes)
    return [context.original_route for context in iter_route_contexts(app.router.routes)]

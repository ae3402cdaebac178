"""One JSON error shape for every failure: `{"error": {"status", "code", "message", "details"}}`."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger(__name__)

CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    503: "service_unavailable",
}

_FEATURE_MESSAGE = re.compile(r"^(features\[\d+\] \([A-Z0-9]+\)) (.*)$", re.DOTALL)


class ErrorDetail(BaseModel):
    """One problem, located by a field path such as `[3].features[3] (MGEMLEEF)` or `line 7`."""

    field: str | None = Field(default=None, examples=["features[3] (MGEMLEEF)"])
    message: str = Field(examples=["must be 1–6; got 9"])


class ErrorBody(BaseModel):
    """What went wrong: HTTP status, a stable machine code, a human message and per-field details."""

    status: int = Field(examples=[422])
    code: str = Field(examples=["validation_error"])
    message: str = Field(examples=["the request is invalid; see details"])
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """The error envelope every non-2xx answer uses."""

    error: ErrorBody


class ApiError(Exception):
    """Raised by routes to answer with the error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Sequence[ErrorDetail] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.details = list(details)
        self.headers = headers


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: Iterable[ErrorDetail] = (),
    headers: dict[str, str] | None = None,
) -> Response:
    """Render the error envelope."""
    body = ErrorBody(status=status, code=code or CODES.get(status, "error"), message=message,
                     details=list(details))
    return Response(orjson.dumps({"error": body.model_dump()}), status_code=status, headers=headers,
                    media_type="application/json")


def field_path(loc: Sequence[int | str]) -> str:
    """Turn a pydantic location like ("body", 3, "features") into `[3].features`."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts)


def validation_details(
    errors: Sequence[Any], strip: tuple[str, ...] = ("body", "path", "query", "header", "cookie")
) -> list[ErrorDetail]:
    """Pydantic errors as details; `invalid_features` messages move the named column into the field."""
    details: list[ErrorDetail] = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if loc and loc[0] in strip:
            loc.pop(0)
        path = field_path(loc)
        message = str(error.get("msg", "invalid value"))
        if error.get("type") == "invalid_features" and (match := _FEATURE_MESSAGE.match(message)):
            column, message = match.groups()
            # The validator reports `features[i] (NAME)` itself; the loc already ends in `features`.
            prefix = path[: -len("features")] if path.endswith("features") else (path + "." if path else "")
            path = prefix + column
        elif error.get("type") == "invalid_features" and message.startswith("features "):
            message = message[len("features "):]
        details.append(ErrorDetail(field=path or None, message=message))
    return details


def summarize(details: Sequence[ErrorDetail]) -> str:
    """A one-line message from the first detail (the whole list stays in `details`)."""
    if not details:
        return "the request is invalid"
    first = details[0]
    text = f"{first.field} {first.message}" if first.field else first.message
    more = f" (and {len(details) - 1} more problem(s))" if len(details) > 1 else ""
    return text + more


def validation_error(error: ValidationError | RequestValidationError, prefix: str = "") -> ApiError:
    """A 422 ApiError built from pydantic errors, optionally prefixing every field path."""
    details = validation_details(error.errors())
    if prefix:
        details = [ErrorDetail(field=f"{prefix}{d.field or ''}", message=d.message) for d in details]
    return ApiError(422, summarize(details), code="validation_error", details=details)


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, code=exc.code, details=exc.details, headers=exc.headers)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if isinstance(exc.detail, str):
        message = exc.detail
    elif exc.detail is None:
        message = HTTPStatus(status).phrase
    else:
        message = str(exc.detail)
    if status == 404 and message == "Not Found":
        message = "no such route"
    elif status == 405 and message == "Method Not Allowed":
        message = "method not allowed on this route"
    return error_response(status, message, headers=getattr(exc, "headers", None))


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if len(errors) == 1 and (plain := _body_problem(request, errors[0], exc.body)) is not None:
        return error_response(422, f"body {plain}", details=[ErrorDetail(field="body", message=plain)])
    if (plain := _form_problem(request, errors)) is not None:
        return error_response(422, f"body {plain}", details=[ErrorDetail(field="body", message=plain)])
    error = validation_error(exc)
    return error_response(422, error.message, details=error.details)


def _body_problem(request: Request, error: Any, body: Any) -> str | None:
    """A plain message for a body that is not JSON at all, where pydantic's would mislead."""
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid" and len(loc) == 2 and isinstance(loc[1], int):
        # FastAPI puts the character offset in the location, where it reads like an array index.
        reason = (error.get("ctx") or {}).get("error", "invalid JSON")
        if isinstance(body, bytes | str):
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            offset = loc[1]
            line = text.count("\n", 0, offset) + 1
            column = offset - (text.rfind("\n", 0, offset) + 1) + 1
            return f"is not valid JSON: {reason} at line {line} column {column}"
        return f"is not valid JSON: {reason}"
    content_type = request.headers.get("content-type")
    if loc == ("body",) and error.get("type") in {"model_attributes_type", "dict_type", "model_type"} and (
        content_type is None or "json" not in content_type.lower()
    ):
        got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        return f"must be a JSON object sent with Content-Type: application/json; got {got}"
    return None


def _form_problem(request: Request, errors: Sequence[Any]) -> str | None:
    """JSON sent to a route that reads a form (the OAuth2 sign-in): say so, not `username Field required`."""
    content_type = (request.headers.get("content-type") or "").lower()
    body_field = getattr(request.scope.get("route"), "body_field", None)
    if "json" not in content_type or body_field is None or not isinstance(body_field.field_info, params.Form):
        return None
    if not all(error.get("type") == "missing" and tuple(error.get("loc", ()))[:1] == ("body",)
               for error in errors):
        return None
    names = "&".join(f"{error['loc'][-1]}=…" for error in errors)
    return (f"must be a form (Content-Type: application/x-www-form-urlencoded: {names}), "
            f"not {content_type.split(';')[0]}")


async def _dependency_down(request: Request, exc: Exception) -> Response:
    log.error("dependency unavailable", extra={"path": request.url.path, "error": repr(exc)[:500]})
    return error_response(503, "a dependency (database or cache) is unavailable; retry shortly",
                          headers={"Retry-After": "1"})


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    # The client went away mid-body (as the batch upload maps it): no one reads the answer, no traceback.
    log.info("client disconnected before the end of the request body", extra={"path": request.url.path})
    return error_response(400, "the client disconnected before the end of the request body")


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return error_response(500, "internal error; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the one envelope (no stack traces in answers)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    for down in (OperationalError, InterfaceError, ConnectionError, RedisConnectionError, RedisTimeoutError):
        app.add_exception_handler(down, _dependency_down)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unhandled)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given statuses, all documented with the error shape."""
    descriptions = {
        401: "Missing or invalid credentials (Bearer JWT or X-API-Key).",
        403: "The credentials lack the scope this route needs.",
        404: "Not found.",
        413: "The body exceeds the configured size limit.",
        422: "The request is invalid; `details` names each field.",
        429: "Rate limit exceeded; retry after the `Retry-After` seconds.",
        503: "A dependency (broker, database or Redis) is unavailable.",
    }
    return {
        status: {
            "model": ErrorResponse,
            "description": descriptions.get(status, HTTPStatus(status).phrase),
            "content": {"application/json": {"example": {"error": {
                "status": status, "code": CODES.get(status, "error"),
                "message": descriptions.get(status, HTTPStatus(status).phrase), "details": [],
            }}}},
        }
        for status in statuses
    }


AUTH_ERRORS = (401, 403, 429)

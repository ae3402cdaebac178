"""Small synchronous httpx client for the CLI: the dev stack's whereabouts, API key, errors as exit codes.

Exit codes, for every command: 0 all good; 1 ran but not everything succeeded (rows rejected, a batch
failed, a service unreachable, failing or busy: 5xx, 429); 2 usage or input error (bad option, missing or
malformed file, rejected credentials, input the API rejected with another 4xx). Ctrl-C is 130.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from models.registry import STATE_HOME_ENV, state_home

DEV_HOME_ENV = STATE_HOME_ENV
API_URL_ENV = "STREAMSCORE_API_URL"
API_KEY_ENV = "STREAMSCORE_API_KEY"
DEFAULT_API_URL = "http://127.0.0.1:8000"

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
EXIT_REMOTE = EXIT_PARTIAL  # a remote failure is a partial failure: the input itself was fine

API_URL_FILE = "api-url"  # present while `streamscore dev` runs
DEV_STACK_FILES = {
    "STREAMSCORE_DATABASE_URL": "database-url",
    "STREAMSCORE_REDIS_URL": "redis-url",
    "STREAMSCORE_KAFKA_BOOTSTRAP": "kafka-bootstrap",
}


class CliError(Exception):
    """An expected failure shown to the user as one message, with the exit code to use."""

    def __init__(self, message: str, exit_code: int = EXIT_REMOTE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def dev_home() -> Path:
    """Where `streamscore dev` keeps its state: $STREAMSCORE_DEV_HOME, else ./.streamscore."""
    return state_home()  # one rule, also where the packaged registry's user pointers are kept


def _dev_file(name: str) -> str | None:
    path = dev_home() / name
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def dev_stack_running() -> bool:
    """True while a `streamscore dev` in this directory (or $STREAMSCORE_DEV_HOME) is up."""
    return (dev_home() / API_URL_FILE).is_file()


def adopt_dev_stack() -> list[str]:
    """Point this process at the running dev stack's engines, for every STREAMSCORE_* URL the environment
    does not set; returns the variables taken. Every client command finds the stack this one way."""
    if not dev_stack_running():
        return []
    taken = []
    for variable, name in DEV_STACK_FILES.items():
        value = _dev_file(name)
        if value and not os.environ.get(variable):
            os.environ[variable] = value
            taken.append(variable)
    return taken


def resolve_api_url(explicit: str | None) -> str:
    """--api-url, else $STREAMSCORE_API_URL, else the running `streamscore dev`, else localhost:8000."""
    return (explicit or os.environ.get(API_URL_ENV) or _dev_file(API_URL_FILE) or DEFAULT_API_URL).rstrip("/")


def resolve_api_key(explicit: str | None) -> str | None:
    """--api-key, else $STREAMSCORE_API_KEY, else the key of the running `streamscore dev`."""
    return explicit or os.environ.get(API_KEY_ENV) or (_dev_file("api-key") if dev_stack_running() else None)


def error_message(response: httpx.Response) -> str:
    """One line from the API's error shape (`{"error": {"message", "details"}}`), or the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        detail = body.get("detail") if isinstance(body, dict) else None
        return str(detail or body)[:500]
    message = str(error.get("message") or response.reason_phrase)
    details = [  # a detail the message already says is not said twice
        f"{item.get('field')}: {item.get('message')}" if item.get("field") else str(item.get("message"))
        for item in error.get("details") or []
        if isinstance(item, dict) and str(item.get("message")) not in message
    ]
    shown = "; ".join(details[:5]) + (f" (+{len(details) - 5} more)" if len(details) > 5 else "")
    return f"{message} — {shown}" if shown and shown not in message else message


class ProgressReader:
    """A file wrapper that reports every chunk httpx reads while uploading."""

    def __init__(self, stream: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._stream = stream
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        """Read a chunk and report its size."""
        chunk = self._stream.read(size)
        self._on_read(len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        """Delegate seeking (httpx measures the length this way)."""
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        """Delegate tell."""
        return self._stream.tell()


class ApiClient:
    """The REST calls the CLI needs; every failure becomes a CliError with a clear message."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float = 60.0) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        message = error_message(response)
        if response.status_code == 401:
            raise CliError(f"not authenticated (401): {message}. Pass --api-key or set {API_KEY_ENV}.",
                           EXIT_USAGE)
        status = response.status_code
        code = EXIT_USAGE if 400 <= status < 500 and status != 429 else EXIT_REMOTE
        raise CliError(f"{response.request.method} {response.request.url.path} failed "
                       f"({response.status_code}): {message}", code)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request, mapping transport failures to a readable message."""
        try:
            return self._check(self._http.request(method, path, **kwargs))
        except httpx.ConnectError as error:
            raise CliError(f"cannot reach the API at {self.base_url} ({_reason(error)}). Is it running? "
                           f"Start everything with `streamscore dev`, or pass --api-url.") from None
        except httpx.TimeoutException:
            raise CliError(f"the API at {self.base_url} did not answer in time") from None
        except httpx.TransportError as error:
            raise CliError(f"connection to {self.base_url} failed: {_reason(error)}") from None

    def get_json(self, path: str) -> Any:
        """GET a JSON document."""
        return self.request("GET", path).json()

    def ready(self) -> bool:
        """True when /ready answers 200 (never raises)."""
        try:
            return self._http.get("/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def submit_batch(
        self, stream: IO[bytes], filename: str, on_read: Callable[[int], None]
    ) -> dict[str, Any]:
        """Upload a CSV to the batch endpoint; returns `{"task_id", "status", "rows"}`."""
        files = {"file": (filename, ProgressReader(stream, on_read), "text/csv")}
        response = self.request("POST", "/api/v1/predict/batch", files=files, timeout=600)
        result: dict[str, Any] = response.json()
        return result

    def batch_status(self, task_id: str) -> dict[str, Any]:
        """The batch task's status document."""
        result: dict[str, Any] = self.get_json(f"/api/v1/predict/batch/{task_id}")
        return result

    def wait_for_batch(
        self, task_id: str, on_status: Callable[[dict[str, Any]], None], timeout: float = 3600.0
    ) -> dict[str, Any]:
        """Poll the task until it is completed or failed, reporting each status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.batch_status(task_id)
            on_status(status)
            if status.get("status") in ("completed", "failed"):
                return status
            if time.monotonic() > deadline:
                raise CliError(f"batch {task_id} still {status.get('status')} after {timeout:.0f}s")
            time.sleep(0.2)

    def stream_results(self, task_id: str, csv: bool) -> Iterator[bytes]:
        """Stream a batch's stored predictions (NDJSON, or CSV when `csv`)."""
        accept = "text/csv" if csv else "application/x-ndjson"
        path = f"/api/v1/predict/batch/{task_id}/results"
        try:
            with self._http.stream("GET", path, headers={"Accept": accept}, timeout=600) as response:
                if not response.is_success:
                    response.read()
                    self._check(response)
                yield from response.iter_bytes()
        except httpx.ConnectError as error:
            raise CliError(f"cannot reach the API at {self.base_url} ({_reason(error)})") from None

    def send_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """POST a list of feature events; answers `{"accepted": n}` once the broker has them."""
        result: dict[str, Any] = self.request("POST", "/api/v1/events", json=events).json()
        return result


def _reason(error: Exception) -> str:
    text = str(error)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return text or type(error).__name__

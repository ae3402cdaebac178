"""Structured JSON logs: one object per line, with event_id/batch_id/customer_id when given as `extra`."""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.messages import DeadLetter

LOG_TRACE_ID: ContextVar[str | None] = ContextVar("streamscore_log_trace_id", default=None)
"""The trace id every log line written now carries (a batch's or a request's; set by infra/tracing.py)."""
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Render a record and its `extra` fields as a single JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise one record."""
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if (trace_id := LOG_TRACE_ID.get()) is not None:
            payload.setdefault("trace_id", trace_id)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


class RepeatFilter(logging.Filter):
    """Lets one record per (logger, message template) through every `window_s` from the Kafka client
    loggers, which log each failed retry (~100 lines a second per process while a broker is down); the
    next one let through carries `repeated`: how many were held back. Other loggers pass untouched."""

    def __init__(self, window_s: float = 60.0, prefixes: tuple[str, ...] = ("aiokafka", "faststream"),
                 suffixes: tuple[str, ...] = (".broker",), keys: int = 1000) -> None:
        super().__init__()
        self.window_s = window_s
        self._prefixes = prefixes
        self._suffixes = suffixes
        self._keys = keys
        self._seen: dict[tuple[str, str], list[float]] = {}  # key -> [last let through, held back since]

    def filter(self, record: logging.LogRecord) -> bool:
        """True to emit the record."""
        if not (record.name.startswith(self._prefixes) or record.name.endswith(self._suffixes)):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.repeated = int(seen[1])
        if len(self._seen) >= self._keys:
            self._seen.clear()  # varying messages: forget rather than grow
        self._seen[key] = [now, 0]
        return True


def configure_logging(level: str = "INFO", service: str = "streamscore") -> None:
    """Send JSON logs to stderr at the given level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def dead_letter_fields(letter: DeadLetter) -> dict[str, Any]:
    """Log `extra` fields that locate a dead-lettered record and say why it failed."""
    return {
        "stage": letter.stage,
        "reason": letter.reason,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "event_id": str(letter.event_id) if letter.event_id else None,
        "customer_id": letter.customer_id,
        "batch_id": str(letter.batch_id) if letter.batch_id else None,
    }

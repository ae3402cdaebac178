"""Structured JSON logs: one object per line, with event_id/batch_id/customer_id when given as `extra`."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.messages import DeadLetter

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
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def configure_logging(level: str = "INFO", service: str = "streamscore") -> None:
    """Send JSON logs to stderr at the given level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
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

"""A consumed Kafka record as the handlers see it, for tests that feed them without a broker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Record:
    """A consumed record (the SourceRecord protocol)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

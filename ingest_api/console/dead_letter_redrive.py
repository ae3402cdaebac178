"""Dead-letter redrive: decide per letter (redrive, quarantine or refuse), publish, and log each decision."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from schemas.messages import DEAD_LETTER_PAYLOAD_MAX
from schemas.redrive import redrive_headers
from schemas.wire import original_value
from store.dead_letters import RedriveEntry
from store.tables import DeadLetterRecord

Outcome = Literal["redriven", "quarantined", "refused"]


@dataclass
class Decision:
    """What a redrive does with one letter; `value` is the record to send when the outcome is redriven."""

    letter: DeadLetterRecord
    outcome: Outcome
    redrive_count: int
    detail: str | None = None
    value: bytes | None = None
    partition: int | None = None
    offset: int | None = None


def decide(
    letter: DeadLetterRecord, max_redrives: int, dead_letter_topic: str, replacement: bytes | None = None
) -> Decision:
    """Redrive with the count one up, quarantine once it was redriven `max_redrives` times, or refuse
    (payload cut or not rebuildable byte for byte, or a letter about the dead-letter topic itself)."""
    if letter.redrive_count >= max_redrives:
        return Decision(letter, "quarantined", letter.redrive_count,
                        f"redriven {letter.redrive_count} times and failed each time (limit {max_redrives})")
    if letter.source_topic == dead_letter_topic:
        return Decision(letter, "refused", letter.redrive_count,
                        "the record is itself a dead letter; its origin cannot take it back")
    value = replacement
    size = f"{letter.payload_size:,}" if letter.payload_size is not None else "its"
    if value is None and letter.payload_truncated:
        return Decision(letter, "refused", letter.redrive_count,
                        f"payload was cut (only the first {DEAD_LETTER_PAYLOAD_MAX:,} of {size} bytes were "
                        "kept), so the original record cannot be rebuilt; redrive it with the whole "
                        "corrected payload")
    if value is None:
        value = original_value(letter.payload, letter.payload_encoding, letter.payload_sha256)
        if value is None:
            return Decision(letter, "refused", letter.redrive_count,
                            "stored payload does not match its SHA-256; redrive it with a corrected payload")
    return Decision(letter, "redriven", letter.redrive_count + 1, value=value)


async def publish(producer: AIOKafkaProducer, decisions: Sequence[Decision]) -> None:
    """Send every redriven record to its origin topic with its original key and the count header, then
    wait for all acknowledgements; a record the broker refuses becomes `refused` with the broker's reason."""
    sending = [d for d in decisions if d.outcome == "redriven"]
    futures: list[Any] = []
    for d in sending:
        try:
            futures.append(await producer.send(d.letter.source_topic, value=d.value, key=d.letter.source_key,
                                               headers=redrive_headers(d.redrive_count)))
        except Exception as error:  # the producer refused it before sending (e.g. the topic is unknown)
            futures.append(_failed(error))
    results = await asyncio.gather(*futures, return_exceptions=True)
    for d, result in zip(sending, results, strict=True):
        if isinstance(result, BaseException):
            d.outcome, d.detail = "refused", f"publish failed: {type(result).__name__}: {result}"[:500]
            d.redrive_count = d.letter.redrive_count
        else:
            d.partition, d.offset = result.partition, result.offset


async def _failed(error: Exception) -> None:
    """An awaitable that raises `error` (a send that failed before it had a future)."""
    raise error


def log_entries(decisions: Sequence[Decision]) -> list[RedriveEntry]:
    """The redrive-log lines of the decisions that changed something (refusals change nothing)."""
    return [
        RedriveEntry(d.letter.id, d.outcome, d.redrive_count, d.letter.source_topic, d.partition, d.offset)
        for d in decisions
        if d.outcome != "refused"
    ]

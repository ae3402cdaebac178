"""The redrive header and payload rebuilding: what a dead letter carries back and sends again."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from schemas.redrive import REDRIVE_HEADER, redrive_count, redrive_headers
from schemas.wire import bounded_payload, dead_letter, original_value


@dataclass
class Record:
    """A consumed record with headers, as aiokafka gives it."""

    value: bytes | None
    topic: str = "customer-features.v1"
    partition: int = 0
    offset: int = 7
    key: bytes | None = b"c-1"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def test_the_count_survives_its_header_and_junk_reads_as_zero() -> None:
    assert redrive_count(redrive_headers(2)) == 2
    assert redrive_count(None) == 0 and redrive_count([("other", b"5")]) == 0
    assert redrive_count([(REDRIVE_HEADER, b"x")]) == 0 and redrive_count([(REDRIVE_HEADER, b"-4")]) == 0
    assert redrive_count([(REDRIVE_HEADER, b"\xff")]) == 0


def test_a_dead_letter_carries_the_count_of_the_record_that_failed() -> None:
    letter = dead_letter(Record(b'{"customer_id": "c-1"}', headers=redrive_headers(3)), "validation", "bad")
    assert letter.redrive_count == 3 and letter.customer_id == "c-1"
    assert dead_letter(Record(b"{}"), "decode", "bad").redrive_count == 0


def test_a_whole_payload_is_rebuilt_byte_for_byte_and_a_changed_one_is_not() -> None:
    for value in (b'{"a": "\xc3\xa9"}', b"\xff\x00 not utf-8"):
        fields = bounded_payload(value)
        rebuilt = original_value(fields["payload"], fields["payload_encoding"], fields["payload_sha256"])
        assert rebuilt == value
    text = bounded_payload(b"abc")
    assert original_value("abd", text["payload_encoding"], text["payload_sha256"]) is None
    assert original_value("!!", "base64", hashlib.sha256(b"").hexdigest()) is None

"""The scorer's fast FeatureEvent path equals the pydantic contract on random valid and invalid input."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from uuid import UUID

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.event_decoding import fast_events, int_rows
from schemas.messages import FeatureEvent
from schemas.wire import (
    BatchRowEncoder,
    EventIds,
    dead_letter,
    error_stage,
    feature_event_json,
    validation_reason,
)
from scorer.scoring import decode_records
from tests.helpers.records import Record
from tests.helpers.wire_strategies import aware, customer_ids, feature_event_payloads, features

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same_ids(ids: EventIds, event: FeatureEvent, value: bytes | None) -> bool:
    """The ids the contract gives, the event_id only when the message set one (else a fresh uuid4)."""
    explicit = b'"event_id"' in (value or b"")
    return ids == EventIds.of(event) if explicit else replace(ids, event_id="") == replace(
        EventIds.of(event), event_id="")


def contract(value: bytes) -> FeatureEvent | str:
    """What the pydantic contract makes of the bytes: the event, or the dead-letter reason."""
    try:
        return FeatureEvent.model_validate_json(value)
    except ValidationError as error:
        return f"{error_stage(error)}: {validation_reason(error)}"


@SETTINGS
@given(st.lists(feature_event_payloads(), min_size=1, max_size=12))
def test_fast_events_accept_only_what_the_contract_accepts_with_the_same_values(values: list[bytes]) -> None:
    fast = fast_events(values)
    assert len(fast.index) == len(fast.ids) == len(fast.matrix)
    for row, (i, ids) in enumerate(zip(fast.index, fast.ids, strict=True)):
        event = contract(values[i])
        assert isinstance(event, FeatureEvent), event
        assert ids == EventIds.of(event)
        assert fast.matrix[row].tolist() == list(event.features)


@SETTINGS
@given(st.lists(feature_event_payloads(), min_size=1, max_size=12))
def test_decode_records_gives_the_contracts_accepted_set_features_and_reasons(values: list[bytes]) -> None:
    records = [Record("t", 0, offset, b"k", value) for offset, value in enumerate(values)]
    valid, matrix, dead = decode_records(records)
    expected = {offset: contract(value) for offset, value in enumerate(values)}
    accepted = {offset: e for offset, e in expected.items() if isinstance(e, FeatureEvent)}
    assert [record.offset for record, _ in valid] == sorted(accepted)
    for (record, ids), row in zip(valid, matrix.tolist(), strict=True):
        event = accepted[record.offset]
        assert same_ids(ids, event, record.value) and row == list(event.features)
    reasons = {letter.offset: f"{letter.stage}: {letter.reason}" for _, letter in dead}
    assert reasons == {offset: e for offset, e in expected.items() if isinstance(e, str)}
    for key, letter in dead:
        record = records[letter.offset]
        assert key == record.key
        assert letter.model_dump(exclude={"failed_at"}) == dead_letter(
            record, letter.stage, letter.reason
        ).model_dump(exclude={"failed_at"})


@SETTINGS
@given(st.lists(features, min_size=1, max_size=8))
def test_compact_canonical_events_take_the_fast_path(rows: list[list[int]]) -> None:
    values = [
        orjson.dumps({"event_id": str(UUID(int=i + 1)), "customer_id": f"c-{i}", "features": row,
                      "occurred_at": "2026-01-01T00:00:00Z"})
        for i, row in enumerate(rows)
    ]
    fast = fast_events(values)
    assert fast.index == list(range(len(rows))) and fast.matrix.tolist() == rows


@SETTINGS
@given(st.lists(st.one_of(features.map(orjson.dumps), st.binary(max_size=40),
                          st.lists(st.integers(-5, 150), max_size=90).map(orjson.dumps)), max_size=6))
def test_int_rows_reads_exactly_the_in_range_86_int_lists(texts: list[bytes]) -> None:
    texts = [text for text in texts if _json(text)]
    matrix, ok = int_rows(texts)
    for row, good, text in zip(matrix.tolist(), ok.tolist(), texts, strict=True):
        parsed = orjson.loads(text)
        try:
            reference = list(FeatureEvent(customer_id="c", features=parsed).features)
        except ValidationError:
            reference = None
        plain = isinstance(parsed, list) and all(type(v) is int for v in parsed)
        assert good == (plain and reference is not None)
        assert not good or row == reference


def _widened(row: list[int], changes: list[tuple[int, int]]) -> list[int]:
    """A valid row with some values given more digits in front (their last two digits stay in range)."""
    wide = list(row)
    for index, hundreds in changes:
        wide[index] += 100 * hundreds
    return wide


widened_features = st.builds(
    _widened, features, st.lists(st.tuples(st.integers(0, 85), st.integers(1, 10**6)), min_size=1, max_size=3)
)


@SETTINGS
@given(st.lists(st.one_of(features, widened_features,
                          st.lists(st.one_of(st.integers(0, 120), st.integers(0, 10**30)), min_size=86,
                                   max_size=86)), min_size=1, max_size=6),
       st.sampled_from([(",", ":"), (", ", ": ")]))
def test_int_rows_reads_batches_as_the_contract_does(
    rows: list[list[int]], separators: tuple[str, str]
) -> None:
    matrix, ok = int_rows([json.dumps(row, separators=separators).encode() for row in rows])
    for parsed, good, row in zip(rows, ok.tolist(), matrix.tolist(), strict=True):
        try:
            reference = list(FeatureEvent.model_validate({"customer_id": "c", "features": parsed}).features)
        except ValidationError:
            reference = None
        assert good == (reference is not None)
        assert not good or row == reference


def _json(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


@SETTINGS
@given(st.uuids(), customer_ids, features, aware, st.sampled_from(["event", "batch", "sync"]),
       st.one_of(st.none(), st.uuids()), st.booleans())
def test_feature_event_json_is_the_contracts_json(
    event_id: UUID, customer: str, row: list[int], at: datetime, source: str, batch: UUID | None, text: bool
) -> None:
    model = FeatureEvent(event_id=event_id, customer_id=customer, features=tuple(row), occurred_at=at,
                         source=source, batch_id=batch)  # type: ignore[arg-type]
    fast = feature_event_json(str(event_id) if text else event_id, customer, row,
                              at.isoformat() if text else at, source, batch)
    assert FeatureEvent.model_validate_json(fast) == model
    assert orjson.loads(fast).keys() == orjson.loads(model.model_dump_json()).keys()


@SETTINGS
@given(st.uuids(), aware, customer_ids, features)
def test_batch_row_encoder_writes_a_contract_event(
    batch: UUID, at: datetime, customer: str, row: list[int]
) -> None:
    encoded = BatchRowEncoder(batch, at).encode(customer, ",".join(map(str, row)))
    event = FeatureEvent.model_validate_json(encoded)
    assert (event.customer_id, list(event.features), event.occurred_at, event.source, event.batch_id) == (
        customer, row, at, "batch", batch)
    assert fast_events([encoded]).index == [0]
    assert np.array_equal(fast_events([encoded]).matrix[0], row)

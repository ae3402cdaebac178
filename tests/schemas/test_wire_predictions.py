"""Prediction encoders (scorer) and the sink's fast row parse equal the pydantic contract on random input."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.feature_log import pack, stored
from schemas.features import PRODUCTS
from schemas.messages import Prediction
from schemas.wire import (
    EventIds,
    dead_letter,
    error_stage,
    prediction_json,
    predictions_json,
    validation_reason,
)
from sink.parsing import fast_row, fast_rows, parse_predictions, unstorable
from store.predictions import PredictionRow
from tests.helpers.records import Record
from tests.helpers.wire_strategies import aware, customer_ids, features, prediction_payloads, unit_floats

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


scored_rows = st.tuples(
    st.uuids().map(str), customer_ids, st.sampled_from(["event", "batch", "sync"]),
    st.one_of(st.none(), st.uuids().map(str)),
    st.lists(st.integers(0, len(PRODUCTS) - 1), min_size=3, max_size=3, unique=True),
    st.lists(unit_floats, min_size=3, max_size=3), unit_floats,
    st.floats(min_value=0.0, max_value=100.0), st.sampled_from(["high", "medium", "low"]),
)


def _record(version: str, picks: list[int], probabilities: list[float], propensity: float, score: float,
            label: str) -> dict[str, object]:
    return {
        "model_version": version,
        "recommendations": [
            {"product_id": PRODUCTS[k].product_id, "name": PRODUCTS[k].name, "probability": p}
            for k, p in zip(picks, probabilities, strict=True)
        ],
        "propensity": propensity,
        "segment": {"label": label, "score": score},
    }


def scored_batch(
    rows: list[tuple[Any, ...]], version: str, scored_at: datetime, packed: list[str] | None = None
) -> list[bytes]:
    """The scorer's prediction messages for scored_rows (with the feature log when `packed` is given)."""
    events = [EventIds(e, c, s, b) for e, c, s, b, *_ in rows]
    return predictions_json(
        events, version,
        np.array([r[4] for r in rows]), np.array([r[5] for r in rows]), np.array([r[6] for r in rows]),
        np.array([r[7] for r in rows]), [r[8] for r in rows], scored_at, packed,
    )


packed_lists = st.one_of(st.none(), st.lists(features.map(pack), min_size=8, max_size=8))


@SETTINGS
@given(st.lists(scored_rows, min_size=1, max_size=8), st.text(max_size=30), aware, packed_lists)
def test_prediction_encoders_write_what_pydantic_writes(
    rows: list[tuple[Any, ...]], version: str, scored_at: datetime, packed: list[str] | None
) -> None:
    events = [EventIds(e, c, s, b) for e, c, s, b, *_ in rows]
    packed = None if packed is None else packed[: len(rows)]
    batch = scored_batch(rows, version, scored_at, packed)
    for i, (event, row, payload) in enumerate(zip(events, rows, batch, strict=True)):
        fields = _record(version, *row[4:])
        if packed is not None:
            fields["features_packed"] = packed[i]
        expected = Prediction(
            event_id=event.event_id, customer_id=event.customer_id, source=event.source,  # type: ignore[arg-type]
            batch_id=event.batch_id, scored_at=scored_at, **fields,  # type: ignore[arg-type]
        ).model_dump_json().encode()
        assert payload == expected
        assert prediction_json(event, fields, scored_at) == expected


def contract_row(value: bytes) -> PredictionRow | str:
    """What the pydantic contract (plus the storability rule) makes of the bytes: a row or the reason."""
    try:
        prediction = Prediction.model_validate_json(value)
    except ValidationError as error:
        return f"{error_stage(error)}: invalid prediction: {validation_reason(error)}"
    if problem := unstorable(prediction, value):
        return f"validation: invalid prediction: {problem}"
    return PredictionRow.of(prediction)


def same_row(fast: PredictionRow, reference: PredictionRow) -> bool:
    """Equal as stored: the same instant and the same jsonb recommendations."""
    return (
        fast._replace(recommendations="", scored_at="")
        == reference._replace(recommendations="", scored_at="")
        and orjson.loads(fast.recommendations) == orjson.loads(reference.recommendations)
        and datetime.fromisoformat(fast.scored_at) == datetime.fromisoformat(reference.scored_at)
    )


@SETTINGS
@given(prediction_payloads())
def test_fast_row_accepts_only_what_the_contract_stores(value: bytes) -> None:
    row = fast_row(value)
    if row is not None:
        reference = contract_row(value)
        assert isinstance(reference, PredictionRow), reference
        assert same_row(row, reference)


@SETTINGS
@given(st.lists(prediction_payloads(), min_size=1, max_size=10))
def test_fast_rows_checks_by_column_what_fast_row_checks_by_record(values: list[bytes]) -> None:
    assert fast_rows(values) == [fast_row(value) for value in values]


@SETTINGS
@given(st.lists(scored_rows, min_size=1, max_size=6), aware, st.lists(prediction_payloads(), max_size=2),
       st.randoms(use_true_random=False))
def test_fast_rows_on_scorer_batches_with_strays(
    rows: list[tuple[Any, ...]], scored_at: datetime, strays: list[bytes], rng: Any
) -> None:
    values = scored_batch(rows, "v1", scored_at) + strays
    rng.shuffle(values)
    assert fast_rows(values) == [fast_row(value) for value in values]


UUID = "0" * 8 + "-0000-0000-0000-" + "0" * 12
ONE_BAD_FIELD: list[tuple[tuple[str | int, ...], Any]] = [
    (("event_id",), UUID.upper().replace("0", "A")), (("event_id",), f"{UUID}\n{UUID}"),
    (("customer_id",), "-starts-badly"), (("customer_id",), "a\nb"), (("model_version",), "v" * 65),
    (("recommendations",), []), (("recommendations", 1, "probability"), 1.5), (("propensity",), -0.1),
    (("segment", "label"), "HIGH"), (("segment", "score"), 100.5), (("scored_at",), "2026-01-01T00:00:00"),
    (("source",), "EVENT"), (("batch_id",), "x"), (("schema_version",), 2),
    (("features_packed",), "0" * 85), (("features_packed",), "Z" * 86), (("features_packed",), 5),
]


@SETTINGS
@given(st.lists(scored_rows, min_size=1, max_size=6), aware, st.sampled_from(ONE_BAD_FIELD), st.data())
def test_one_bad_field_in_a_canonical_batch_is_rejected(
    rows: list[tuple[Any, ...]], scored_at: datetime, bad: tuple[tuple[str | int, ...], Any], data: Any
) -> None:
    values = scored_batch(rows, "v1", scored_at)
    target = data.draw(st.integers(0, len(values) - 1))
    message = orjson.loads(values[target])
    path, value = bad
    parent = message
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    values[target] = orjson.dumps(message)
    rows_out = fast_rows(values)
    assert rows_out[target] is None
    assert rows_out == [fast_row(v) for v in values]


@SETTINGS
@given(st.lists(prediction_payloads(), min_size=1, max_size=10))
def test_parse_predictions_gives_the_contracts_rows_and_reasons(values: list[bytes]) -> None:
    records = [Record("p", 0, offset, b"k", value) for offset, value in enumerate(values)]
    valid, dead = parse_predictions(records)
    expected = {offset: contract_row(value) for offset, value in enumerate(values)}
    rows = {offset: r for offset, r in expected.items() if isinstance(r, PredictionRow)}
    assert [record.offset for record, _ in valid] == sorted(rows)
    assert all(same_row(row, rows[record.offset]) for record, row in valid)
    assert {d.offset: f"{d.stage}: {d.reason}" for _, d in dead} == {
        offset: r for offset, r in expected.items() if isinstance(r, str)
    }
    for key, letter in dead:
        assert key == b"k" and letter.model_dump(exclude={"failed_at"}) == dead_letter(
            records[letter.offset], letter.stage, letter.reason).model_dump(exclude={"failed_at"})


@SETTINGS
@given(st.lists(scored_rows, min_size=1, max_size=5), aware, packed_lists)
def test_scorer_output_takes_the_sinks_fast_path(
    rows: list[tuple[Any, ...]], scored_at: datetime, packed: list[str] | None
) -> None:
    packed = None if packed is None else packed[: len(rows)]
    payloads = scored_batch(rows, "v1", scored_at, packed)
    parsed = fast_rows(payloads)
    assert all(row is not None for row in parsed)
    expected = [None] * len(rows) if packed is None else [stored(text) for text in packed]
    assert [row.features for row in parsed if row is not None] == expected

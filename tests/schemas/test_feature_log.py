"""The feature log codec: packed text and stored bytes round-trip every valid vector and refuse the rest."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.feature_log import (
    PACKED_PATTERN,
    PackedError,
    all_packed,
    from_stored,
    pack,
    pack_rows,
    stored,
    stored_matrix,
    stored_rows,
    unlogged,
    unpack,
    unpack_rows,
)
from schemas.features import FEATURE_LOWER
from schemas.messages import Prediction
from tests.helpers.wire_strategies import bad_packed, features, prediction_dicts

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(features, min_size=1, max_size=6))
def test_packed_and_stored_forms_round_trip_every_valid_vector(vectors: list[list[int]]) -> None:
    texts = pack_rows(np.array(vectors))
    assert texts == [pack(v) for v in vectors]
    assert [list(unpack(t)) for t in texts] == vectors
    assert unpack_rows(texts).tolist() == vectors
    assert all_packed(texts)
    blobs = [stored(t) for t in texts]
    assert [list(b) for b in blobs] == vectors  # byte i is value i
    assert stored_rows(texts) == blobs  # the sink's batch path
    assert [from_stored(b) for b in blobs] == texts
    assert stored_matrix(blobs).tolist() == vectors
    import re

    assert all(re.fullmatch(PACKED_PATTERN, t) for t in texts)


@SETTINGS
@given(features, bad_packed)
def test_a_bad_packed_text_is_refused_alone_and_in_a_batch(vector: list[int], bad: Any) -> None:
    if not isinstance(bad, str):
        return  # the contract refuses non-strings by type (covered below)
    with pytest.raises(PackedError):
        unpack(bad)
    assert not all_packed([pack(vector), bad])
    assert stored_rows([pack(vector), bad]) is None


def test_lengths_that_only_add_up_as_a_batch_are_refused() -> None:
    text = pack(FEATURE_LOWER)
    short, long = text[:85], text[85:] + text  # joined, exactly two valid vectors
    assert not all_packed([short, long])
    assert stored_rows([short, long]) is None


@SETTINGS
@given(prediction_dicts(), bad_packed)
def test_the_contract_refuses_what_the_codec_refuses(body: dict[str, Any], bad: Any) -> None:
    with pytest.raises(ValidationError) as error:
        Prediction.model_validate({**body, "features_packed": bad})
    assert "features_packed" in str(error.value)


def test_a_range_error_names_the_column() -> None:
    text = pack([1] * 5 + [0] * 81)
    with pytest.raises(PackedError, match=r"MAANTHUI\) must be 1–10; got character 'Y'"):
        unpack(text[:1] + "Y" + text[2:])


@SETTINGS
@given(prediction_dicts(), st.booleans())
def test_unlogged_drops_only_a_trailing_feature_log(body: dict[str, Any], last: bool) -> None:
    packed = body.pop("features_packed", None)
    if packed is not None:  # last, as the scorer writes it, or first
        body = {**body, "features_packed": packed} if last else {"features_packed": packed, **body}
    message = orjson.dumps(body)
    cached = unlogged(message)
    reference = Prediction.model_validate_json(message)
    if last and packed is not None:
        expected = reference.model_copy(update={"features_packed": None})
        assert Prediction.model_validate_json(cached) == expected
        assert len(message) - len(cached) == 107
    else:
        assert cached == message

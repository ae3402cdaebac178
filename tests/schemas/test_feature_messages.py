"""What a caller reads when a feature vector is refused: the count, the CARAVAN column, the column meant."""

from __future__ import annotations

import pytest
from pydantic_core import PydanticCustomError

from schemas.features import FEATURE_NAMES, parse_features


def _refusal(value: object) -> str:
    with pytest.raises(PydanticCustomError) as caught:
        parse_features(value)
    return str(caught.value)


def test_85_values_are_told_the_86th_is_caravan() -> None:
    message = _refusal([1] * 85)
    assert message.startswith("features must have exactly 86 values in columns.csv order; got 85 (")
    assert "the 86th is CARAVAN" in message and "send 0 when unknown" in message
    assert "CARAVAN" not in _refusal([1] * 87)  # the hint is for the one count it explains


@pytest.mark.parametrize(("sent", "meant"), [("MOSTYP", "MOSTYPE"), ("mostype", "MOSTYPE"),
                                              ("PPERSAU", "PPERSAUT")])
def test_an_unknown_column_name_suggests_the_one_meant(sent: str, meant: str) -> None:
    values = {name: 1 for name in FEATURE_NAMES if name != meant} | {sent: 1}
    assert f"unknown column name(s): {sent} (did you mean {meant}?)" in _refusal(values)
    assert "did you mean" not in _refusal({"NOTHING_LIKE_IT": 1})

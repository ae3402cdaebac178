"""The column-wise regex check equals matching every value on its own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.columns import all_fullmatch, all_uuid_text
from schemas.wire import CUSTOMER_ID, UUID_TEXT

ids = st.one_of(
    st.uuids().map(str),
    st.from_regex(CUSTOMER_ID, fullmatch=True),
    st.text(alphabet="0123456789abcdef-\n_.@ xA", max_size=40),
    st.uuids().map(str).flatmap(lambda u: st.sampled_from([u[:-1], u + "a", u.upper(), u.replace("-", "a", 1),
                                                              u[:8] + u[9] + "-" + u[10:], u[:-1] + "é"])),
)


@given(st.lists(ids, max_size=8))
def test_all_fullmatch_equals_matching_each_value(values: list[str]) -> None:
    for pattern in (UUID_TEXT, CUSTOMER_ID):
        assert all_fullmatch(pattern, values) == all(pattern.fullmatch(v) is not None for v in values)
    assert all_uuid_text(values) == all(UUID_TEXT.fullmatch(v) is not None for v in values)


def test_a_value_holding_two_valid_ids_is_not_two_values() -> None:
    first, second = "0" * 8 + "-0000-0000-0000-" + "0" * 12, "f" * 8 + "-ffff-ffff-ffff-" + "f" * 12
    assert all_fullmatch(UUID_TEXT, [first, second])
    assert not all_fullmatch(UUID_TEXT, [f"{first}\n{second}"])
    assert not all_fullmatch(UUID_TEXT, [first, f"{second}\n"])
    assert all_uuid_text([first, second])
    assert not all_uuid_text([first[:-1], second + "f"])  # lengths that add up

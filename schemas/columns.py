"""Column-wise checks of a batch's decoded fields: one C-level call per column instead of one per value."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

SEPARATOR = "\n"


@lru_cache(maxsize=16)
def _repeated(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """`pattern`, then any number of newline-separated repeats of it."""
    return re.compile(f"(?:{pattern.pattern})(?:\\n(?:{pattern.pattern}))*", pattern.flags)


def all_fullmatch(pattern: re.Pattern[str], values: Sequence[str]) -> bool:
    """Whether every value fullmatches `pattern`, which must never match a newline.

    The values are joined with newlines and matched once; exactly len - 1 newlines in the joined text
    means no value holds one, so each separator is a boundary and each value is matched whole.
    """
    if not values:
        return True
    joined = SEPARATOR.join(values)
    return joined.count(SEPARATOR) == len(values) - 1 and _repeated(pattern).fullmatch(joined) is not None


_UUID_LENGTH = 36
_UUID_DASHES = (8, 13, 18, 23)
_UUID_CHARACTERS = b"0123456789abcdef-"


def all_uuid_text(values: Sequence[str]) -> bool:
    """all_fullmatch(schemas.wire.UUID_TEXT, values) by string operations (about 5x faster).

    36 characters each, only lowercase hex digits and dashes, dashes exactly at 8, 13, 18 and 23 of each.
    """
    count = len(values)
    if not count:
        return True
    joined = "".join(values)
    return (
        set(map(len, values)) == {_UUID_LENGTH}
        and joined.isascii()
        and joined.count("-") == len(_UUID_DASHES) * count
        and all(joined[k::_UUID_LENGTH] == "-" * count for k in _UUID_DASHES)
        and not joined.encode().translate(None, _UUID_CHARACTERS)
    )

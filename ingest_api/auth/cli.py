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
users_app = typer.Typer(help="Create and change users of the OAuth2 password flow.", no_args_is_help=True)
PASSWORD_OPTION = typer.Option(
    "--password",
    envvar="STREAMSCORE_USER_PASSWORD",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    show_default=False,
    help="Asked for when omitted (or set STREAMSCORE_USER_PASSWORD); never echoed.",
)


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

    from ingest_api.auth.credentials import create_api_key

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
    password: Annotated[str, PASSWORD_OPTION] = "",
) -> None:
    """Create a user with an argon2-hashed password."""
    from sqlalchemy.exc import IntegrityError

    from ingest_api.auth.credentials import create_user

    try:
        _run_in_session(lambda session: create_user(session, username, password, role))
    except ValueError as error:
        raise _fail(str(error)) from None
    except IntegrityError:
        raise _fail(f"a user named {username!r} already exists") from None
    typer.echo(f"Created user {username!r} with role {role}")


def _change_user(username: str, done: str, **changes: object) -> None:
    """Apply `changes` to one user (exit 2 if unknown) and say what was done."""
    from store.users import update_user

    if not _run_in_session(lambda session: update_user(session, username, **changes)):  # type: ignore[arg-type]
        raise _fail(f"no user named {username!r}")
    typer.echo(f"{done}; running APIs refuse the user's older tokens within their cache TTL (5 s)")


@users_app.command("disable")
def disable_user(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Disable a user: no sign-in, and every token of theirs stops working."""
    _change_user(username, f"Disabled user {username!r}", disabled=True)


@users_app.command("enable")
def enable_user(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Enable a disabled user again (their unexpired tokens work again; set-password voids them)."""
    _change_user(username, f"Enabled user {username!r}", disabled=False)


@users_app.command("set-role")
def set_role(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option("--role", help="admin | client | reader")],
) -> None:
    """Change a user's role; it applies to their current tokens too."""
    from ingest_api.auth.principals import ROLE_SCOPES

    if role not in ROLE_SCOPES:
        raise _fail(f"role must be one of {', '.join(ROLE_SCOPES)}")
    _change_user(username, f"User {username!r} now has role {role}", role=role)


@users_app.command("set-password")
def set_password(
    username: Annotated[str, typer.Argument(help="Login name.")],
    password: Annotated[str, PASSWORD_OPTION] = "",
) -> None:
    """Set a new password (argon2); every token issued with the old one stops working."""
    from ingest_api.auth.credentials import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, hash_password

    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise _fail(f"password must be {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters")
    _change_user(username, f"Set a new password for {username!r}", password_hash=hash_password(password))

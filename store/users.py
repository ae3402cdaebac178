"""User and API-key repository: queries only; callers (the request or CLI boundary) commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from store.tables import ApiKey, User


async def add_user(session: AsyncSession, username: str, password_hash: str, role: str) -> None:
    """Stage a new user row."""
    session.add(User(username=username, password_hash=password_hash, role=role))
    await session.flush()


async def get_user(session: AsyncSession, username: str) -> User | None:
    """The user with this username, or None."""
    result = await session.execute(select(User).where(User.username == username))
    return result.scalar_one_or_none()


async def update_user(
    session: AsyncSession, username: str, *, password_hash: str | None = None, role: str | None = None,
    disabled: bool | None = None,
) -> bool:
    """Change a user's password hash, role or disabled flag; False if there is no such user."""
    given = (("password_hash", password_hash), ("role", role), ("disabled", disabled))
    changes = {name: value for name, value in given if value is not None}
    result = await session.execute(update(User).where(User.username == username).values(**changes))
    return bool(getattr(result, "rowcount", 0))


async def add_api_key(session: AsyncSession, name: str, key_hash: str, scopes: Sequence[str]) -> None:
    """Stage a new API-key row (hash only)."""
    session.add(ApiKey(name=name, key_hash=key_hash, scopes=list(scopes)))
    await session.flush()


async def use_active_key(session: AsyncSession, key_hash: str) -> tuple[str, list[str]] | None:
    """Name and scopes of the unrevoked key with this hash, stamping last_used_at; None if unknown.

    Read first: an unknown key (a guess) costs one indexed SELECT and never a write transaction.
    """
    found = await session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.scopes)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked.is_(False))
    )
    row = found.one_or_none()
    if row is None:
        return None
    await session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=func.now()))
    return row.name, list(row.scopes)


async def revoke_api_key(session: AsyncSession, name: str) -> bool:
    """Mark the named key revoked; False if no such key."""
    result = await session.execute(
        update(ApiKey).where(ApiKey.name == name).values(revoked=True).returning(ApiKey.id)
    )
    return result.one_or_none() is not None


async def list_api_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, oldest first (rows carry the hash: never print it)."""
    result = await session.execute(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
    return list(result.scalars())

"""Credentials: API-key and password hashing, the username rule, and creating keys and users.

Keys are 256-bit random strings, stored as SHA-256 only: a slow hash (argon2) protects guessable
passwords, but a random key cannot be guessed, and argon2 would cost ~50 ms per lookup and forbid
lookup by hash. Passwords are argon2 (pwdlib's recommended parameters: 64 MiB, t=3, p=4, so one
check runs 4 threads for ~200-350 ms of CPU here), so sign-in hashing runs on its own small thread
pool with a bounded queue (`PasswordHasher`): a flood of sign-ins is refused instead of taking the
executor the rest of the API shares, and `reserved` of its queue's places wait only for users who signed
in recently (a spray fills the rest, not those). The pool's threads run at the lowest CPU priority (nice 19,
inherited by argon2's lane threads), so the event loop always preempts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import threading
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from pwdlib import PasswordHash
from sqlalchemy.ext.asyncio import AsyncSession

from ingest_api.auth.principals import ROLE_SCOPES, SCOPES
from store import users

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
MAX_USERNAME_CHARS = 64
API_KEY_PREFIX = "ssk_"
API_KEY_LENGTH = len(API_KEY_PREFIX) + 43  # token_urlsafe(32)

_passwords = PasswordHash.recommended()


class HasherBusy(RuntimeError):
    """Too many password checks are already queued; the caller should retry shortly."""


class PasswordHasher:
    """argon2 checks on a dedicated pool of `workers` threads; more than `max_pending` queued is refused.

    Only `priority` checks may take the last `reserved` places.
    """

    def __init__(self, workers: int = 1, max_pending: int = 8, reserved: int = 0) -> None:
        self.max_pending = max_pending
        self.reserved = min(reserved, max_pending - 1)
        self._pending = 0
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2",
                                            initializer=_lowest_priority)

    async def verify(self, password: str, password_hash: str | None, priority: bool = False) -> bool:
        """Check a password; with no user, hash anyway so timing does not leak. May raise HasherBusy."""
        if self._pending >= self.max_pending - (0 if priority else self.reserved):
            raise HasherBusy("too many sign-ins are being checked; retry shortly")
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            if password_hash is None:
                await loop.run_in_executor(self._executor, _passwords.hash, password)
                return False
            return await loop.run_in_executor(self._executor, _passwords.verify, password, password_hash)
        finally:
            self._pending -= 1

    @property
    def thread_names(self) -> list[str]:
        """Names of the pool's threads (at most `workers`)."""
        return [thread.name for thread in self._executor._threads]

    def close(self) -> None:
        """Stop the pool (queued checks are cancelled)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _lowest_priority() -> None:
    # Linux niceness is per thread, and threads argon2 starts inherit it.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def hash_api_key(key: str) -> str:
    """SHA-256 hex of a key (keys are high-entropy, so a fast hash is safe; see module doc)."""
    return hashlib.sha256(key.encode()).hexdigest()


def is_well_formed_key(key: str) -> bool:
    """True if `key` has the shape of a key this API issues (anything else skips the database)."""
    return key.startswith(API_KEY_PREFIX) and len(key) == API_KEY_LENGTH


def password_stamp(password_hash: str) -> str:
    """A short stamp of a stored password hash for tokens: it changes whenever the password is set."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def hash_password(password: str) -> str:
    """An argon2 hash of a password."""
    return _passwords.hash(password)


def username_problem(username: str) -> str | None:
    """Why `username` can never name a user (length, control characters), or None if it can."""
    if not username or len(username) > MAX_USERNAME_CHARS:
        return f"must be 1-{MAX_USERNAME_CHARS} characters"
    if any(unicodedata.category(char) == "Cc" for char in username):
        return "must not contain control characters"
    return None


def validate_scopes(scopes: Sequence[str]) -> list[str]:
    """The scopes, de-duplicated; raises ValueError naming any unknown one."""
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SCOPES))}")
    if not scopes:
        raise ValueError("at least one scope is required")
    return sorted(set(scopes))


async def create_api_key(session: AsyncSession, name: str, scopes: Sequence[str]) -> str:
    """Store a new key's hash and return the plaintext key (shown once); the caller commits."""
    if not name or len(name) > 64:
        raise ValueError("name must be 1-64 characters")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    await users.add_api_key(session, name, hash_api_key(key), validate_scopes(scopes))
    return key


async def create_user(session: AsyncSession, username: str, password: str, role: str) -> None:
    """Store a user with an argon2 password hash; the caller commits."""
    if role not in ROLE_SCOPES:
        raise ValueError(f"role must be one of {', '.join(ROLE_SCOPES)}")
    if problem := username_problem(username):
        raise ValueError(f"username {problem}")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"password must be at most {MAX_PASSWORD_CHARS} characters")
    password_hash = await asyncio.to_thread(hash_password, password)
    await users.add_user(session, username, password_hash, role)


class SignedIn(NamedTuple):
    """Who signed in: what a token is issued for."""

    username: str
    role: str
    user_id: int
    stamp: str


async def authenticate_user(
    session: AsyncSession, hasher: PasswordHasher, username: str, password: str, priority: bool = False
) -> SignedIn | None:
    """The user if the password matches an enabled user, else None; may raise HasherBusy."""
    user = await users.get_user(session, username)
    valid = await hasher.verify(password, None if user is None else user.password_hash, priority)
    if user is None or not valid or user.disabled:
        return None
    return SignedIn(user.username, user.role, user.id, password_stamp(user.password_hash))

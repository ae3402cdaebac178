"""Who may call: scopes, roles, the Principal a credential resolves to, and its short-lived cache."""

from __future__ import annotations

import time
from typing import Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict

Scope = Literal["predict", "events", "batch", "read", "admin"]
Role = Literal["admin", "client", "reader"]
SCOPES: frozenset[str] = frozenset(get_args(Scope))
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": SCOPES,
    "client": frozenset({"predict", "events", "batch", "read"}),
    "reader": frozenset({"read"}),
}
V = TypeVar("V")


class Principal(BaseModel):
    """Who is calling: a signed-in user or an API key, with the scopes it holds."""

    model_config = ConfigDict(frozen=True)

    subject: str
    kind: Literal["user", "api_key", "anonymous"]
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """True if this principal holds `scope` (the admin scope grants everything)."""
        return scope in self.scopes or "admin" in self.scopes


ANONYMOUS = Principal(subject="anonymous", kind="anonymous", scopes=frozenset())
"""A request that sent no credentials: it holds no scope."""


class TtlCache(Generic[V]):
    """Short-lived in-process cache of verified credentials (key hash, token or username -> value)."""

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, V | None]] = {}

    def lookup(self, credential: str) -> tuple[bool, V | None]:
        """(found, principal): a cached refusal is (True, None); absent or expired is (False, None)."""
        entry = self._entries.get(credential)
        if entry is None:
            return False, None
        if entry[0] <= time.monotonic():
            self._entries.pop(credential, None)
            return False, None
        return True, entry[1]

    def get(self, credential: str) -> V | None:
        """The cached value, or None if absent, expired or a cached refusal."""
        return self.lookup(credential)[1]

    def put(self, credential: str, value: V | None, ttl_s: float | None = None) -> None:
        """Remember a verified credential (or a refusal, as None) for the TTL, or less if `ttl_s` is less."""
        ttl = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
        if ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[credential] = (time.monotonic() + ttl, value)

    def pop(self, credential: str) -> None:
        """Forget one credential."""
        self._entries.pop(credential, None)

    def clear(self) -> None:
        """Forget everything (e.g. after revoking a key in-process)."""
        self._entries.clear()


PrincipalCache = TtlCache[Principal]

"""A secured API app in-process: users, keys, sign-in, and the rate-limit window."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from infra.database import create_engine, create_sessionmaker
from ingest_api.auth import routes as auth
from ingest_api.auth.credentials import create_api_key, create_user, password_stamp
from ingest_api.auth.dependencies import AdminPrincipal, PredictPrincipal, ReadPrincipal
from ingest_api.auth.middleware import AuthMiddleware
from ingest_api.auth.rate_limit import WINDOW_SECONDS
from ingest_api.auth.state import SecurityState, build_security
from ingest_api.errors import install_error_handlers
from ingest_api.settings import ApiSettings
from store import users

SECRET = "s" * 24 + "-test-secret-of-40-bytes"


PASSWORD = "correct horse battery"


@dataclass
class SecureApp:
    """A small app with the real auth middleware and dependencies, its clients and an HTTP client."""

    app: FastAPI
    settings: ApiSettings
    security: SecurityState
    redis: Redis
    db_engine: AsyncEngine
    client: httpx.AsyncClient

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.security.sessionmaker


def build_app(security: SecurityState) -> FastAPI:
    """The auth router plus one route per scope, behind the API's auth middleware and error handlers."""
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(AuthMiddleware, fastapi_app=app)
    app.include_router(auth.router)

    @app.get("/predict-only")
    async def predict_only(principal: PredictPrincipal) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/read-only")
    async def read_only(principal: ReadPrincipal) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/admin-only")
    async def admin_only(principal: AdminPrincipal) -> dict[str, str]:
        return {"subject": principal.subject}

    app.state.security = security
    return app


async def open_app(settings: ApiSettings, key_cache_ttl_s: float = 0.0) -> SecureApp:
    """The security state on the real database and Redis (no broker or model: these routes use none)."""
    db_engine = create_engine(settings)
    redis = Redis.from_url(settings.redis_url)
    sessionmaker = create_sessionmaker(db_engine)
    security = build_security(settings, redis, sessionmaker, key_cache_ttl_s=key_cache_ttl_s)
    app = build_app(security)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return SecureApp(app, settings, security, redis, db_engine, client)


async def close_app(secure: SecureApp) -> None:
    """Close the client and the connections."""
    await secure.client.aclose()
    secure.security.close()
    await secure.redis.aclose()
    await secure.db_engine.dispose()


async def add_user(secure: SecureApp, username: str, role: str) -> None:
    """Create a user through the public function, committing like a boundary does."""
    async with secure.sessionmaker() as session:
        await create_user(session, username, PASSWORD, role)
        await session.commit()


async def bound_to(secure: SecureApp, username: str) -> dict[str, Any]:
    """The `uid` and `stp` claims that bind a token to this user's row and current password."""
    async with secure.sessionmaker() as session:
        user = await users.get_user(session, username)
    assert user is not None, username
    return {"uid": user.id, "stp": password_stamp(user.password_hash)}


async def add_key(secure: SecureApp, name: str, scopes: list[str]) -> str:
    """Create an API key and return its plaintext."""
    async with secure.sessionmaker() as session:
        key = await create_api_key(session, name, scopes)
        await session.commit()
    return key


async def login(secure: SecureApp, username: str, password: str = PASSWORD) -> httpx.Response:
    """Call the token endpoint with form data."""
    return await secure.client.post("/api/v1/auth/token", data={"username": username, "password": password})


async def wait_for_fresh_window(needed_s: float = 10.0) -> None:
    """Sleep into the next rate-limit window if this one ends within `needed_s` (counts stay in one)."""
    remaining = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if remaining < needed_s:
        await asyncio.sleep(remaining + 0.05)


def rsa_pems() -> tuple[str, str]:
    """A fresh RSA key pair as PEM (private, public)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public

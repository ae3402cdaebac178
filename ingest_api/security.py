"""Authentication and authorisation: JWTs, API keys, passwords, scopes (all token logic lives here).

- Users sign in with the OAuth2 password flow and get a JWT (python-jose; swap the library here
  only). Decoding pins the algorithm list and requires sub, exp, iat, iss and aud.
- Machine clients send `X-API-Key`. Keys are 256-bit random strings, stored as SHA-256 only: a
  slow hash (argon2) protects guessable passwords, but a random key cannot be guessed, and argon2
  would cost ~50 ms per lookup and forbid lookup by hash. Successful lookups are cached in-process
  for `key_cache_ttl_s` (5 s), so a revoked key stops working within that TTL. Verified tokens are
  cached by their exact string until min(exp, 60 s), so per-request auth stays a dict lookup.
- Every authenticated request then passes the per-principal rate limiter (ingest_api.rate_limit).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, HTTPException, status
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from jose import jwt
from jose.exceptions import JOSEError
from pwdlib import PasswordHash
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from ingest_api.deps import Services, ServicesDep
from ingest_api.rate_limit import RateLimiter
from ingest_api.settings import ApiSettings
from store import users

log = logging.getLogger(__name__)

Scope = Literal["predict", "events", "batch", "read", "admin"]
Role = Literal["admin", "client", "reader"]
SCOPES: frozenset[str] = frozenset(get_args(Scope))
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": SCOPES,
    "client": frozenset({"predict", "events", "batch", "read"}),
    "reader": frozenset({"read"}),
}
MIN_SECRET_BYTES = 32
MIN_PASSWORD_CHARS = 8
API_KEY_PREFIX = "ssk_"
API_KEY_LENGTH = len(API_KEY_PREFIX) + 43  # token_urlsafe(32)
LOGIN_ATTEMPTS_PER_MINUTE = 20
TOKEN_CACHE_TTL_S = 60.0
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="streamscore", ApiKey realm="streamscore"'}

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)
_passwords = PasswordHash.recommended()


class SecurityConfigError(RuntimeError):
    """The API refuses to start with unsafe token settings."""


class Principal(BaseModel):
    """Who is calling: a signed-in user or an API key, with the scopes it holds."""

    model_config = ConfigDict(frozen=True)

    subject: str
    kind: Literal["user", "api_key"]
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """True if this principal holds `scope` (the admin scope grants everything)."""
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class JwtConfig:
    """Resolved signing material and claims policy for issuing and verifying tokens."""

    algorithm: str
    signing_key: str
    verification_key: str
    issuer: str
    audience: str
    ttl_seconds: int


class PrincipalCache:
    """Short-lived in-process cache of verified credentials (key hash or token -> principal)."""

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, credential: str) -> Principal | None:
        """The cached principal, or None if absent or expired."""
        entry = self._entries.get(credential)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self._entries.pop(credential, None)
            return None
        return entry[1]

    def put(self, credential: str, principal: Principal, ttl_s: float | None = None) -> None:
        """Remember a verified credential for the TTL (or less, e.g. until a token expires)."""
        ttl = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
        if ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[credential] = (time.monotonic() + ttl, principal)

    def clear(self) -> None:
        """Forget everything (e.g. after revoking a key in-process)."""
        self._entries.clear()


@dataclass
class SecurityState:
    """Per-process security objects, built once in the API lifespan."""

    jwt: JwtConfig
    keys: PrincipalCache
    tokens: PrincipalCache
    limiter: RateLimiter
    login_limiter: RateLimiter
    key_lookups: dict[str, asyncio.Future[tuple[str, list[str]] | None]] = field(default_factory=dict)


def resolve_jwt_secret(settings: ApiSettings) -> str:
    """The HS256 secret; refuses a missing or short one unless dev mode, which generates one."""
    secret = settings.jwt_secret
    if secret is not None and len(secret.encode()) >= MIN_SECRET_BYTES:
        return secret
    if not settings.dev_mode:
        raise SecurityConfigError(
            f"STREAMSCORE_JWT_SECRET is {'missing' if secret is None else 'too short'}: it must be at "
            f"least {MIN_SECRET_BYTES} bytes "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    log.warning(
        "dev mode: STREAMSCORE_JWT_SECRET missing or short, generated a random one; "
        "tokens will not survive a restart"
    )
    return secrets.token_urlsafe(48)


def build_jwt_config(settings: ApiSettings) -> JwtConfig:
    """Resolve secrets/keys for the configured algorithm, failing fast on unsafe settings."""
    common: dict[str, Any] = {
        "issuer": settings.jwt_issuer,
        "audience": settings.jwt_audience,
        "ttl_seconds": settings.jwt_ttl_seconds,
    }
    if settings.jwt_algorithm == "HS256":
        secret = resolve_jwt_secret(settings)
        return JwtConfig(algorithm="HS256", signing_key=secret, verification_key=secret, **common)
    private_pem, public_pem = _rsa_keys(settings)
    return JwtConfig(algorithm="RS256", signing_key=private_pem, verification_key=public_pem, **common)


def build_security(
    settings: ApiSettings, redis: Redis | None, *, key_cache_ttl_s: float = 5.0
) -> SecurityState:
    """Everything the security dependencies need; call from the lifespan so bad settings stop start-up."""
    login_limit = LOGIN_ATTEMPTS_PER_MINUTE if settings.rate_limit else 0
    return SecurityState(
        jwt=build_jwt_config(settings),
        keys=PrincipalCache(ttl_s=key_cache_ttl_s),
        tokens=PrincipalCache(ttl_s=TOKEN_CACHE_TTL_S),
        limiter=RateLimiter(redis, settings.rate_limit),
        login_limiter=RateLimiter(redis, login_limit, namespace="streamscore:rl-login"),
    )


def _rsa_keys(settings: ApiSettings) -> tuple[str, str]:
    if settings.jwt_private_key is None:
        if not settings.dev_mode:
            raise SecurityConfigError("RS256 needs STREAMSCORE_JWT_PRIVATE_KEY (PEM)")
        log.warning("dev mode: no RS256 key given, generated a random one; tokens will not survive a restart")
        generated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = generated.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    else:
        private_pem = settings.jwt_private_key
    try:
        private_key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    except (ValueError, TypeError) as error:
        raise SecurityConfigError(
            f"STREAMSCORE_JWT_PRIVATE_KEY is not an unencrypted PEM key: {error}"
        ) from None
    if not isinstance(private_key, rsa.RSAPrivateKey) or private_key.key_size < 2048:
        raise SecurityConfigError("STREAMSCORE_JWT_PRIVATE_KEY must be an RSA key of at least 2048 bits")
    derived_public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if settings.jwt_public_key is None:
        return private_pem, derived_public.decode()
    try:
        given_public = serialization.load_pem_public_key(settings.jwt_public_key.encode())
    except (ValueError, TypeError) as error:
        raise SecurityConfigError(f"STREAMSCORE_JWT_PUBLIC_KEY is not a PEM public key: {error}") from None
    given = given_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if given != derived_public:
        raise SecurityConfigError("STREAMSCORE_JWT_PUBLIC_KEY does not match STREAMSCORE_JWT_PRIVATE_KEY")
    return private_pem, settings.jwt_public_key


def issue_token(config: JwtConfig, subject: str, role: str) -> str:
    """A signed access token for a user of `role`."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "role": role,
        "scope": " ".join(sorted(ROLE_SCOPES[role])),
        "iat": now,
        "exp": now + config.ttl_seconds,
        "iss": config.issuer,
        "aud": config.audience,
    }
    return str(jwt.encode(claims, config.signing_key, algorithm=config.algorithm))


def decode_token(config: JwtConfig, token: str) -> Principal:
    """The principal a token names; raises 401 for any invalid, expired or incomplete token."""
    return _decode(config, token)[0]


def _decode(config: JwtConfig, token: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token,
            config.verification_key,
            algorithms=[config.algorithm],
            audience=config.audience,
            issuer=config.issuer,
            options={f"require_{claim}": True for claim in REQUIRED_CLAIMS},
        )
    except JOSEError as error:
        reason = "token expired" if "expired" in str(error).lower() else "invalid token"
        raise _unauthorized(reason) from None
    except (ValueError, TypeError, KeyError):
        raise _unauthorized("invalid token") from None
    # Checked again here so a library swap or option typo cannot silently drop a requirement.
    if any(claim not in claims for claim in REQUIRED_CLAIMS) or not isinstance(claims["sub"], str):
        raise _unauthorized("invalid token")
    role = claims.get("role")
    if not isinstance(role, str) or role not in ROLE_SCOPES:
        raise _unauthorized("invalid token")
    return Principal(subject=claims["sub"], kind="user", scopes=ROLE_SCOPES[role]), float(claims["exp"])


def hash_api_key(key: str) -> str:
    """SHA-256 hex of a key (keys are high-entropy, so a fast hash is safe; see module doc)."""
    return hashlib.sha256(key.encode()).hexdigest()


def hash_password(password: str) -> str:
    """An argon2 hash of a password."""
    return _passwords.hash(password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    """Check a password off the event loop; with no user, hash anyway so timing does not leak."""
    if password_hash is None:
        await asyncio.to_thread(_passwords.hash, password)
        return False
    return await asyncio.to_thread(_passwords.verify, password, password_hash)


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
    if not username or len(username) > 64:
        raise ValueError("username must be 1-64 characters")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    password_hash = await asyncio.to_thread(hash_password, password)
    await users.add_user(session, username, password_hash, role)


async def authenticate_user(session: AsyncSession, username: str, password: str) -> tuple[str, str] | None:
    """(username, role) if the password matches an enabled user, else None."""
    user = await users.get_user(session, username)
    valid = await verify_password(password, None if user is None else user.password_hash)
    if user is None or not valid or user.disabled:
        return None
    return user.username, user.role


def get_security(services: Services) -> SecurityState:
    """The process's security state; built on first use if the lifespan did not build it."""
    if services.security is None:
        services.security = build_security(services.settings, services.redis)
    return services.security


async def _principal_for_key(services: Services, security: SecurityState, api_key: str) -> Principal:
    key_hash = hash_api_key(api_key)
    cached = security.keys.get(key_hash)
    if cached is not None:
        return cached
    if not api_key.startswith(API_KEY_PREFIX) or len(api_key) != API_KEY_LENGTH:
        raise _unauthorized("invalid or revoked API key")  # malformed: spare the database
    # Single flight: a burst of requests with one uncached key shares one lookup (one row update).
    lookup = security.key_lookups.get(key_hash)
    if lookup is None:
        lookup = asyncio.ensure_future(_lookup_key(services, key_hash))
        security.key_lookups[key_hash] = lookup
        lookup.add_done_callback(lambda _: security.key_lookups.pop(key_hash, None))
    found = await asyncio.shield(lookup)
    if found is None:
        raise _unauthorized("invalid or revoked API key")
    name, scopes = found
    principal = Principal(subject=f"key:{name}", kind="api_key", scopes=frozenset(scopes))
    security.keys.put(key_hash, principal)
    return principal


async def _lookup_key(services: Services, key_hash: str) -> tuple[str, list[str]] | None:
    async with services.sessionmaker() as session:
        found = await users.use_active_key(session, key_hash)
        await session.commit()
    return found


async def authenticate(services: Services, bearer: str | None, api_key: str | None) -> Principal:
    """The caller's principal from an API key (preferred if sent) or a bearer token; 401 otherwise."""
    security = get_security(services)
    if api_key:
        return await _principal_for_key(services, security, api_key)
    if bearer:
        # A token string is signed, so a verified one can be reused until its exp (HS256 decode ~80 µs).
        principal = security.tokens.get(bearer)
        if principal is None:
            principal, expires_at = _decode(security.jwt, bearer)
            security.tokens.put(bearer, principal, ttl_s=expires_at - time.time())
        return principal
    raise _unauthorized("missing credentials: send a bearer token (Authorization) or an API key (X-API-Key)")


async def enforce_rate_limit(limiter: RateLimiter, subject: str) -> None:
    """Raise 429 with Retry-After when `subject` is over its per-minute budget."""
    decision = await limiter.hit(subject)
    if not decision.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="rate limit exceeded",
            headers={"Retry-After": str(decision.retry_after_s)},
        )


async def authorize(
    services: Services, bearer: str | None, api_key: str | None, scope: str | None
) -> Principal:
    """Authenticate, rate-limit, then demand `scope` (None: any principal); 401/429/403 as HTTPException."""
    principal = await authenticate(services, bearer, api_key)
    # Kind in the key: a user named "key:x" must not share API key x's budget.
    await enforce_rate_limit(get_security(services).limiter, f"{principal.kind}:{principal.subject}")
    if scope is not None and not principal.allows(scope):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"missing scope '{scope}'")
    return principal


def require_scope(scope: Scope | None) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: authenticate, rate-limit, then demand `scope` (None: any principal)."""

    async def dependency(
        services: ServicesDep,
        bearer: Annotated[str | None, Depends(oauth2_scheme)],
        api_key: Annotated[str | None, Depends(api_key_scheme)],
    ) -> Principal:
        return await authorize(services, bearer, api_key, scope)

    dependency.__name__ = f"require_{scope or 'principal'}"
    return dependency


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=reason, headers=CHALLENGE)


AnyPrincipal = Annotated[Principal, Depends(require_scope(None))]
PredictPrincipal = Annotated[Principal, Depends(require_scope("predict"))]
EventsPrincipal = Annotated[Principal, Depends(require_scope("events"))]
BatchPrincipal = Annotated[Principal, Depends(require_scope("batch"))]
ReadPrincipal = Annotated[Principal, Depends(require_scope("read"))]
AdminPrincipal = Annotated[Principal, Depends(require_scope("admin"))]

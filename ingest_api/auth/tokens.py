"""JWTs for signed-in users: signing material from settings, issuing, and strict decoding.

python-jose is used here only, so a library swap touches one module. Keys are built as explicit jose
key objects: given a string, jose would parse a JSON-shaped secret as a JWK (a 1-byte `k` would then
defeat the 32-byte minimum). Decoding pins the algorithm list, requires sub, exp, iat, iss and aud,
refuses an `iat` in the future, and never lets a hostile token raise anything but a 401.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from jose.backends.base import Key
from jose.exceptions import JOSEError

from ingest_api.auth.principals import ROLE_SCOPES
from ingest_api.settings import ApiSettings

log = logging.getLogger(__name__)

TOKEN_PATH = "/api/v1/auth/token"
"""Where tokens are issued (the OAuth2 password flow); exempt from header authentication."""
MIN_SECRET_BYTES = 32
MAX_STAMP_CHARS = 64
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud", "uid", "stp")
"""`uid` is the user's row id and `stp` a stamp of its password hash: a token names one user row with one
password, so a recycled username or a changed password (new salt, new stamp) voids older tokens."""
MAX_TOKEN_BYTES = 8 * 1024  # a real token is ~300 bytes; longer ones are refused before parsing
IAT_LEEWAY_S = 5  # clock skew tolerated between signer and verifier


class SecurityConfigError(RuntimeError):
    """The API refuses to start with unsafe token settings."""


class InvalidToken(Exception):
    """The token is invalid, expired or incomplete; `reason` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class JwtConfig:
    """Resolved signing material and claims policy for issuing and verifying tokens."""

    algorithm: str
    signing_key: Key
    verification_key: Key
    issuer: str
    audience: str
    ttl_seconds: int
    max_age_seconds: int = 86_400


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says: who, which role it was issued for, and when it expires."""

    subject: str
    role: str
    expires_at: float
    user_id: int
    stamp: str


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


def dev_key_env(settings: ApiSettings) -> dict[str, str]:
    """Dev mode's generated JWT key as STREAMSCORE_ variables, for processes that must share one."""
    if not settings.dev_mode:
        return {}
    if settings.jwt_algorithm == "HS256":
        secret = resolve_jwt_secret(settings)
        return {} if secret == settings.jwt_secret else {"STREAMSCORE_JWT_SECRET": secret}
    return {} if settings.jwt_private_key else {"STREAMSCORE_JWT_PRIVATE_KEY": _rsa_keys(settings)[0]}


def build_jwt_config(settings: ApiSettings) -> JwtConfig:
    """Resolve secrets/keys for the configured algorithm, failing fast on unsafe settings."""
    common: dict[str, Any] = {
        "issuer": settings.jwt_issuer,
        "audience": settings.jwt_audience,
        "ttl_seconds": settings.jwt_ttl_seconds,
        "max_age_seconds": settings.jwt_max_age_seconds,
    }
    if settings.jwt_ttl_seconds > settings.jwt_max_age_seconds:
        raise SecurityConfigError("STREAMSCORE_JWT_TTL_SECONDS exceeds STREAMSCORE_JWT_MAX_AGE_SECONDS: "
                                  "tokens would be refused before they expire")
    if settings.jwt_algorithm == "HS256":
        try:
            # The raw bytes of the secret, whatever they look like (never parsed as a JWK).
            key = jwk.HMACKey(resolve_jwt_secret(settings).encode(), "HS256")
        except JOSEError as error:
            raise SecurityConfigError(f"STREAMSCORE_JWT_SECRET is unusable: {error}") from None
        return JwtConfig(algorithm="HS256", signing_key=key, verification_key=key, **common)
    private_pem, public_pem = _rsa_keys(settings)
    return JwtConfig(algorithm="RS256", signing_key=jwk.construct(private_pem, "RS256"),
                     verification_key=jwk.construct(public_pem, "RS256"), **common)


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


def issue_token(config: JwtConfig, subject: str, role: str, user_id: int, stamp: str) -> str:
    """A signed access token for the user row `user_id` of `role`, with its password's `stamp`."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "uid": user_id,
        "stp": stamp,
        "role": role,
        "scope": " ".join(sorted(ROLE_SCOPES[role])),
        "iat": now,
        "exp": now + config.ttl_seconds,
        "iss": config.issuer,
        "aud": config.audience,
    }
    return str(jwt.encode(claims, config.signing_key, algorithm=config.algorithm))


def decode_token(config: JwtConfig, token: str) -> TokenClaims:
    """The claims of a valid token; raises InvalidToken for anything invalid, expired or incomplete."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("invalid token")
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
        raise InvalidToken("token expired" if "expired" in str(error).lower() else "invalid token") from None
    except (ValueError, TypeError, KeyError, RecursionError):
        # A hostile header (e.g. JSON nested 1,000 deep) must be a 401, never a 500.
        raise InvalidToken("invalid token") from None
    # Checked again here so a library swap or option typo cannot silently drop a requirement.
    if any(claim not in claims for claim in REQUIRED_CLAIMS) or not isinstance(claims["sub"], str):
        raise InvalidToken("invalid token")
    role = claims.get("role")
    if not isinstance(role, str) or role not in ROLE_SCOPES:
        raise InvalidToken("invalid token")
    issued_at = claims["iat"]
    if not isinstance(issued_at, int | float) or issued_at > time.time() + IAT_LEEWAY_S:
        raise InvalidToken("invalid token")
    if time.time() - issued_at > config.max_age_seconds:  # whatever its exp says
        raise InvalidToken("token too old; sign in again")
    user_id, stamp = claims["uid"], claims["stp"]
    if type(user_id) is not int or not isinstance(stamp, str) or len(stamp) > MAX_STAMP_CHARS:
        raise InvalidToken("invalid token")
    return TokenClaims(subject=claims["sub"], role=role, expires_at=float(claims["exp"]), user_id=user_id,
                       stamp=stamp)

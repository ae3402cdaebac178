"""Security settings checked at start-up: the JWT secret, token lifetimes, dev mode's secret, RS256 keys."""

from __future__ import annotations

import logging

import pytest

from ingest_api.auth.tokens import SecurityConfigError, build_jwt_config, resolve_jwt_secret
from ingest_api.settings import ApiSettings
from tests.helpers.security import rsa_pems


def test_missing_or_short_secret_refuses_to_start() -> None:
    with pytest.raises(SecurityConfigError, match="missing"):
        resolve_jwt_secret(ApiSettings(jwt_secret=None, dev_mode=False))
    with pytest.raises(SecurityConfigError, match="too short"):
        resolve_jwt_secret(ApiSettings(jwt_secret="x" * 31, dev_mode=False))
    assert resolve_jwt_secret(ApiSettings(jwt_secret="x" * 32)) == "x" * 32


def test_a_token_lifetime_past_the_maximum_age_refuses_to_start() -> None:
    with pytest.raises(SecurityConfigError, match="MAX_AGE"):
        build_jwt_config(ApiSettings(jwt_secret="x" * 32, jwt_ttl_seconds=7200, jwt_max_age_seconds=3600))
    assert build_jwt_config(ApiSettings(jwt_secret="x" * 32)).max_age_seconds == 86_400


def test_dev_mode_generates_a_secret_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ingest_api.auth.tokens"):
        first = resolve_jwt_secret(ApiSettings(jwt_secret=None, dev_mode=True))
        second = resolve_jwt_secret(ApiSettings(jwt_secret="short", dev_mode=True))
    assert len(first.encode()) >= 32 and first != second
    assert sum("generated a random one" in record.getMessage() for record in caplog.records) == 2


def test_rs256_rejects_mismatched_or_missing_keys() -> None:
    private, _ = rsa_pems()
    _, other_public = rsa_pems()
    with pytest.raises(SecurityConfigError, match="does not match"):
        build_jwt_config(
            ApiSettings(jwt_algorithm="RS256", jwt_private_key=private, jwt_public_key=other_public)
        )
    with pytest.raises(SecurityConfigError, match="PRIVATE_KEY"):
        build_jwt_config(ApiSettings(jwt_algorithm="RS256", dev_mode=False))

"""Shadow model routes: set or clear the shadow version, promote it, and its live comparison."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ingest_api.auth.dependencies import AdminPrincipal, ReadPrincipal
from ingest_api.console import scorer_stats
from ingest_api.console.scorer_stats import ShadowStatus
from ingest_api.deps import ServicesDep
from ingest_api.errors import AUTH_ERRORS, ApiError, ErrorDetail, error_responses

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/models", tags=["models"])
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class ShadowRequest(BaseModel):
    """The registered version to score alongside the active one."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"version": "v20261201-120000"}]}
    )

    version: str = Field(min_length=1, max_length=64, pattern=VERSION_PATTERN)


class ShadowPromoted(BaseModel):
    """The promoted version is now active; nothing is shadowing."""

    active: str
    previous: str


@router.get(
    "/shadow",
    summary="Shadow version and live comparison",
    description=(
        "The registry's shadow version and, from the live scorers' stats, how it agrees with the active "
        "version on the same traffic: top-3 agreement, propensity rank correlation, segment agreement, "
        "and the latency the shadow adds per micro-batch. When the stats store is slow or down the "
        "answer is still 200, with `state` `unavailable` and a `reason`."
    ),
    responses=error_responses(*AUTH_ERRORS),
)
async def shadow_status(services: ServicesDep, _: ReadPrincipal) -> ShadowStatus:
    """Read the pointer and the scorers' stats hashes (unreadable stats: `state` unavailable, still 200)."""
    return await scorer_stats.current_shadow(services, await scorer_stats.read_scorer_stats(services))


@router.post(
    "/shadow",
    summary="Set the shadow version",
    description=(
        "Loads the version once to prove it works, then points the registry's `shadow` at it; scorers "
        "start scoring every micro-batch with it too at their next pointer check. It is never served."
    ),
    responses=error_responses(*AUTH_ERRORS, 404, 409, 422, 503),
)
async def set_shadow(body: ShadowRequest, services: ServicesDep, principal: AdminPrincipal) -> ShadowStatus:
    """Set the shadow pointer."""
    registry = services.engine.registry
    if body.version not in await asyncio.to_thread(registry.versions):
        raise ApiError(404, f"unknown model version {body.version!r}",
                       details=[ErrorDetail(field="version", message="not in the registry")])
    if body.version == await asyncio.to_thread(registry.active_version):
        raise ApiError(409, f"{body.version} is the active version; a shadow must be another one",
                       details=[ErrorDetail(field="version", message="is the active version")])
    try:
        await asyncio.to_thread(services.engine.set_shadow, body.version)
    except Exception as error:
        log.exception("shadow version failed to load", extra={"model_version": body.version})
        raise ApiError(503, f"could not load model {body.version}: {type(error).__name__}") from None
    log.info("shadow version set", extra={"model_version": body.version, "by": principal.subject})
    return ShadowStatus(active=services.engine.model_version, shadow=body.version, state="no_live_traffic")


@router.delete(
    "/shadow",
    summary="Stop shadowing",
    description="Clears the registry's `shadow` pointer; scorers stop scoring with it at their next check.",
    responses=error_responses(*AUTH_ERRORS),
)
async def clear_shadow(services: ServicesDep, principal: AdminPrincipal) -> ShadowStatus:
    """Clear the shadow pointer."""
    await asyncio.to_thread(services.engine.set_shadow, None)
    log.info("shadow version cleared", extra={"by": principal.subject})
    return ShadowStatus(active=services.engine.model_version, shadow=None, state="no_shadow")


@router.post(
    "/promote",
    summary="Promote the shadow version",
    description=(
        "Makes the shadow the active version through the hot-swap path (this process at once, the scorers "
        "and other API workers at their next pointer check, no restart) and stops shadowing."
    ),
    responses=error_responses(*AUTH_ERRORS, 409, 503),
)
async def promote(services: ServicesDep, principal: AdminPrincipal) -> ShadowPromoted:
    """Promote the shadow."""
    previous = services.engine.model_version
    try:
        version = await asyncio.to_thread(services.engine.promote)
    except LookupError:
        raise ApiError(409, "no shadow version to promote") from None
    except Exception as error:
        log.exception("shadow promotion failed")
        raise ApiError(503, f"could not promote the shadow: {type(error).__name__}") from None
    log.info("shadow promoted",
             extra={"model_version": version, "previous": previous, "by": principal.subject})
    return ShadowPromoted(active=version, previous=previous)

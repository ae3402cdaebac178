"""Model registry routes: list versions, validation metrics of the active one, activate a version."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam

from ingest_api.auth.dependencies import AdminPrincipal, ReadPrincipal
from ingest_api.bodies import ModelActivated, ModelMetrics, ModelVersions
from ingest_api.console.model_metrics import metrics_from_manifest
from ingest_api.deps import Services, ServicesDep
from ingest_api.errors import AUTH_ERRORS, ApiError, ErrorDetail, error_responses
from models.registry import Registry

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/models", tags=["models"])

VersionPath = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                                       examples=["v20250101-120000"])]


def registry_of(services: Services) -> Registry:
    """The registry this process's engine loads from."""
    registry = getattr(services.engine, "registry", None)
    if isinstance(registry, Registry):
        return registry
    root = services.settings.model_registry
    return Registry(Path(root) if root else None)


@router.get(
    "",
    summary="Model versions",
    description="Every complete version in the registry, the active one, and the one this process serves.",
    responses=error_responses(*AUTH_ERRORS),
)
async def list_models(services: ServicesDep, _: ReadPrincipal) -> ModelVersions:
    """List the registry."""
    registry = registry_of(services)
    versions, active = await asyncio.to_thread(lambda: (registry.versions(), registry.active_version()))
    return ModelVersions(active=active, serving=services.engine.model_version, versions=versions)


@router.get(
    "/metrics",
    summary="Validation metrics of the active model",
    description=(
        "From the active version's manifest: accuracy, precision, recall, F1 and AUC of the caravan "
        "propensity model, buyers in the top-scored 20 %, the recommender's HR@3 and the value "
        "segment's Spearman correlation; `details` holds the full metrics block."
    ),
    responses=error_responses(*AUTH_ERRORS),
)
async def active_metrics(services: ServicesDep, _: ReadPrincipal) -> ModelMetrics:
    """Read the active manifest."""
    version = services.engine.model_version
    try:
        manifest = await asyncio.to_thread(registry_of(services).manifest, version)
    except KeyError as error:
        raise ApiError(404, str(error.args[0]) if error.args else "unknown version") from None
    return metrics_from_manifest(version, manifest)


@router.post(
    "/{version}/activate",
    summary="Activate a model version",
    description=(
        "Switches this process to the version at once and moves the registry's `active` pointer, so the "
        "other processes (scorers, other API workers) switch at their next pointer check."
    ),
    responses=error_responses(*AUTH_ERRORS, 404, 422, 503),
)
async def activate(version: VersionPath, services: ServicesDep, principal: AdminPrincipal) -> ModelActivated:
    """Activate the version."""
    previous = services.engine.model_version
    if version not in await asyncio.to_thread(registry_of(services).versions):
        raise ApiError(404, f"unknown model version {version!r}",
                       details=[ErrorDetail(field="version", message="not in the registry")])
    try:
        await asyncio.to_thread(services.engine.activate, version)
    except KeyError as error:
        raise ApiError(404, str(error.args[0]) if error.args else "unknown version") from None
    except Exception as error:
        log.exception("model activation failed", extra={"model_version": version})
        raise ApiError(503, f"could not load model {version}: {type(error).__name__}") from None
    log.info("model activated", extra={"model_version": version, "previous": previous,
                                       "by": principal.subject})
    return ModelActivated(active=services.engine.model_version, previous=previous)

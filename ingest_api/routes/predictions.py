"""`GET /api/v1/predictions/{customer_id}`: the latest prediction, from Redis, else from Postgres."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import ValidationError
from redis.exceptions import RedisError

from infra.tracing import span
from ingest_api.auth.dependencies import ReadPrincipal
from ingest_api.deps import Services, ServicesDep
from ingest_api.errors import AUTH_ERRORS, ApiError, ErrorDetail, error_responses
from ingest_api.routes.history import DecisionHistory, HistoryQuery, decision_history
from schemas.messages import CUSTOMER_ID_PATTERN, Prediction
from store import predictions as stored
from store.cache import cached_json, prediction_key

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["predictions"])

CustomerPath = Annotated[str, Path(min_length=1, max_length=64, pattern=f"^{CUSTOMER_ID_PATTERN}$",
                                   description="The customer's id.", examples=["c-1001"])]


async def cached_prediction(services: Services, customer_id: str) -> Prediction | None:
    """The latest prediction under the active model version from Redis; None on a miss or a Redis error.

    Every read gives up after redis_timeout_seconds; after a failure Redis is skipped for
    redis_pause_seconds, so a hung Redis costs one request one timeout, not every request.
    """
    if services.redis_paused():
        return None
    key = prediction_key(customer_id, services.engine.model_version)
    try:
        with span("api", "redis get", **{"db.system.name": "redis"}):
            raw = await asyncio.wait_for(services.redis.get(key), services.settings.redis_timeout_seconds)
    except (RedisError, OSError, TimeoutError) as error:
        services.pause_redis()
        log.warning("redis read failed; falling back to Postgres", extra={"error": repr(error)})
        return None
    found = cached_json(raw)
    if found is None:
        return None
    try:
        prediction = Prediction.model_validate_json(found)
    except ValidationError:
        log.warning("unreadable cached prediction", extra={"customer_id": customer_id})
        return None
    if prediction.features_packed is not None:  # features are shown to admins only (?history=N)
        return prediction.model_copy(update={"features_packed": None})
    return prediction


async def stored_prediction(services: Services, customer_id: str) -> Prediction:
    """Redis for the active version first, then the newest stored row in Postgres; 404 when none."""
    cached = await cached_prediction(services, customer_id)
    if cached is not None:
        return cached
    with span("api", "postgres select", **{"db.system.name": "postgresql"}):
        async with services.sessionmaker() as session:
            row = await stored.latest_prediction(session, customer_id)
    if row is None:
        raise ApiError(404, f"no prediction for customer {customer_id!r}",
                       details=[ErrorDetail(field="customer_id", message="no stored prediction")])
    return Prediction.model_validate(stored.prediction_payload(row))


@router.get(
    "/predictions/{customer_id}",
    summary="Latest prediction of a customer",
    description=(
        "The customer's latest prediction (greatest `scored_at`, then the order on the customer's "
        "partition; docs/operations.md): Redis (`predict:{customer_id}:{model_version}` for the active "
        "model version) first, then Postgres (any version) when Redis misses, fails or takes longer than "
        "`STREAMSCORE_REDIS_TIMEOUT_SECONDS`. 404 when the customer has never been scored. With "
        "`?history=N`: the latest N decisions from Postgres instead (features for the admin scope only)."
    ),
    response_model=Prediction | DecisionHistory,
    responses=error_responses(*AUTH_ERRORS, 404, 422),
)
async def get_prediction(
    customer_id: CustomerPath, services: ServicesDep, principal: ReadPrincipal, history: HistoryQuery = None
) -> Prediction | DecisionHistory:
    """Look up the latest prediction, or the decision history."""
    if history is not None:
        return await decision_history(services, customer_id, history, principal)
    return await stored_prediction(services, customer_id)

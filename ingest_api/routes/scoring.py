"""In-process scoring: `POST /api/v1/predict/single` and `POST /api/v1/segment` on the shared engine."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from fastapi import APIRouter, Response

from infra.kafka import topic_name
from ingest_api.auth.dependencies import PredictPrincipal
from ingest_api.auth.principals import Principal
from ingest_api.batching import ReasonCodesFailed
from ingest_api.bodies import ScoreRequest, SegmentOut, SegmentRequest
from ingest_api.deps import Services, ServicesDep
from ingest_api.errors import AUTH_ERRORS, ApiError, error_responses
from ingest_api.routes.predictions import stored_prediction
from schemas import topics, wire
from schemas.messages import Prediction
from schemas.wire import EventIds

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["predictions"])
PREDICT_SINGLE_PATH = "/api/v1/predict/single"


async def score_one(services: Services, features: tuple[int, ...]) -> dict[str, Any]:
    """One row and its reason codes through the (dynamically batched) engine; a model failure is 503."""
    try:
        return await services.sync_scorer.score(features)
    except ReasonCodesFailed as error:
        log.exception("reason codes failed")
        raise ApiError(503, f"reason codes failed: {error}", code="inference_failed") from None
    except Exception as error:
        log.exception("sync scoring failed")
        raise ApiError(503, f"scoring failed: {type(error).__name__}", code="inference_failed") from None


def sync_prediction_json(record: dict[str, Any], customer_id: str) -> bytes:
    """The sync Prediction for an engine record, as JSON (`schemas.wire.prediction_json`).

    The contract's range checks are done inline, and a record that breaks one goes through pydantic to
    raise its error.
    """
    recommendations, segment, propensity = record["recommendations"], record["segment"], record["propensity"]
    if not (
        len(recommendations) == 3
        and all(0.0 <= r["probability"] <= 1.0 for r in recommendations)
        and 0.0 <= propensity <= 1.0
        and 0.0 <= segment["score"] <= 100.0
    ):
        Prediction.model_validate({**record, "event_id": uuid4(), "customer_id": customer_id,
                                   "scored_at": datetime.now(UTC), "source": "sync"})
    return wire.prediction_json(EventIds(str(uuid4()), customer_id, "sync", None), record, wire.utc_now())


@router.post(
    "/predict/single",
    summary="Score one customer now",
    description=(
        "With `features`: scores in this process on the shared engine (concurrent requests share one "
        "engine call when dynamic batching is on) and returns the full Prediction (`source` sync). The "
        "prediction is also published to `predictions.v1` in the background, so it is stored like any "
        "other; the answer does not wait for that. With only `customer_id`: the latest stored "
        "prediction, or 404; that read also needs the `read` scope."
    ),
    response_model=Prediction,
    responses=error_responses(*AUTH_ERRORS, 404, 422, 503),
)
async def predict_single(body: ScoreRequest, services: ServicesDep, principal: PredictPrincipal) -> Response:
    """Score now, or look up the latest prediction."""
    return Response(await predict_payload(services, body, principal), media_type="application/json")


async def predict_payload(services: Services, body: ScoreRequest, principal: Principal) -> bytes:
    """The JSON answer of `predict_single` (also served by ingest_api.fast_path); errors raise ApiError."""
    if body.features is None:
        if not principal.allows("read"):
            # Reading a stored prediction is a read, whatever route it comes through.
            raise ApiError(403, "missing scope 'read': without `features` this route reads a stored "
                           "prediction")
        stored = await stored_prediction(services, body.customer_id)
        return stored.model_dump_json().encode()
    record = await score_one(services, body.features)  # with its reasons
    # Serialised once: the same bytes go to predictions.v1 and back to the caller.
    payload = sync_prediction_json(record, body.customer_id)
    await services.background.publish(
        topic_name(services.settings, topics.PREDICTIONS), body.customer_id.encode(), payload
    )
    return payload


@router.post(
    "/segment",
    summary="Value segment of one customer",
    description="Scores the features in-process and returns only the value segment (label and 0–100 score).",
    responses=error_responses(*AUTH_ERRORS, 422, 503),
)
async def segment(body: SegmentRequest, services: ServicesDep, _: PredictPrincipal) -> SegmentOut:
    """Score and keep the segment."""
    record = await score_one(services, body.features)
    reasons = record["reasons"]
    seg = record["segment"]
    assert isinstance(seg, dict)
    return SegmentOut(customer_id=body.customer_id, label=seg["label"], score=seg["score"],
                      model_version=str(record["model_version"]),
                      reasons={"up": reasons["segment_up"], "down": reasons["segment_down"]})

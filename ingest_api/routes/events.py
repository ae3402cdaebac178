"""`POST /api/v1/events`: validate feature events and publish them, answering only after every ack."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pydantic_core
from fastapi import APIRouter, Request, status
from pydantic import TypeAdapter, ValidationError

from infra.kafka import topic_name
from ingest_api.auth.dependencies import EventsPrincipal
from ingest_api.bodies import EventIn, EventsAccepted
from ingest_api.deps import ServicesDep
from ingest_api.errors import AUTH_ERRORS, ApiError, ErrorDetail, error_responses, validation_error
from ingest_api.publisher import AckedPublisher
from schemas import topics
from schemas.wire import feature_event_json

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["events"])

_EVENTS = TypeAdapter(list[EventIn])
_EVENT_SCHEMA = EventIn.model_json_schema()


def _request_body_schema() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": "One event object, or a JSON array of up to `max_events_per_request` events.",
            "content": {"application/json": {
                "schema": {"oneOf": [
                    _EVENT_SCHEMA, {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1},
                ]},
                "examples": {
                    "single": {"summary": "one event", "value": _EVENT_SCHEMA["examples"][0]},
                    "array": {"summary": "several events", "value": [_EVENT_SCHEMA["examples"][0]]},
                },
            }},
        }
    }


def parse_events(body: bytes, max_items: int) -> list[EventIn]:
    """Decode one event or an array of them; any invalid item rejects the whole request (422)."""
    if not body.strip():
        raise ApiError(422, "the body is empty: send one event object or an array of events")
    try:
        # allow_inf_nan lets a NaN reach the feature validator, which then names the field it is in.
        data = pydantic_core.from_json(body, allow_inf_nan=True)
    except ValueError as error:
        raise ApiError(422, f"the body is not valid JSON: {error}", code="invalid_json") from None
    if isinstance(data, dict):
        try:
            return [EventIn.model_validate(data)]
        except ValidationError as error:
            raise validation_error(error) from None
    if not isinstance(data, list):
        raise ApiError(422, "the body must be one event object or an array of events")
    if not data:
        raise ApiError(422, "the array is empty: send at least one event")
    if len(data) > max_items:
        raise ApiError(
            413, f"too many events: {len(data)} in one request; the limit is {max_items}",
            details=[ErrorDetail(field="body", message=f"at most {max_items} items")],
        )
    try:
        return _EVENTS.validate_python(data)
    except ValidationError as error:
        raise validation_error(error) from None


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Publish feature events",
    description=(
        "Accepts one FeatureEvent-shaped object or an array of them, validates every item "
        "(all-or-nothing: one invalid item rejects the request and nothing is published), publishes each "
        "to `customer-features.v1` keyed by `customer_id`, and answers **202 only after the broker "
        "acknowledged every record** (acks=all). `event_id` is generated when absent; send your own to "
        "make retries idempotent. `source` is always `event`."
    ),
    response_description="Every event was acknowledged by the broker.",
    responses=error_responses(*AUTH_ERRORS, 413, 422, 503),
    openapi_extra=_request_body_schema(),
)
async def publish_events(request: Request, services: ServicesDep, _: EventsPrincipal) -> EventsAccepted:
    """Validate, publish and await all acks."""
    settings = services.settings
    parsed = parse_events(await request.body(), settings.max_events_per_request)
    received_at = datetime.now(UTC)
    publisher = AckedPublisher(services.producer, topic_name(settings, topics.CUSTOMER_FEATURES),
                               services.topics)
    event_ids: list[UUID] = []
    try:
        for event in parsed:
            event_id = event.event_id or uuid4()
            event_ids.append(event_id)
            value = feature_event_json(event_id, event.customer_id, event.features,
                                       event.occurred_at or received_at, "event")
            await publisher.send(event.customer_id.encode(), value)
        await publisher.wait_acked()
    except Exception as error:
        publisher.abandon()
        log.error("event publish failed", extra={"events": len(parsed), "error": repr(error)})
        raise ApiError(503, "the broker did not acknowledge every event; retry the request (events that "
                       "carry an event_id are stored once however often they are sent)",
                       code="publish_failed") from None
    services.metrics.events_published.labels(topics.CUSTOMER_FEATURES).inc(len(parsed))
    return EventsAccepted(accepted=len(parsed), event_ids=event_ids)

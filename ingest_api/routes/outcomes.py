"""`POST /api/v1/outcomes`: purchases (JSON or CSV) validated, published to `outcomes.v1`, acks awaited."""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

import pydantic_core
from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from infra.kafka import topic_name
from ingest_api.auth.dependencies import EventsPrincipal
from ingest_api.deps import ServicesDep
from ingest_api.errors import AUTH_ERRORS, ApiError, ErrorDetail, error_responses, validation_error
from ingest_api.publisher import AckedPublisher
from schemas import topics
from schemas.outcomes import Outcome

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["events"])

_OUTCOMES = TypeAdapter(list[Outcome])
CSV_COLUMNS = ("outcome_id", "customer_id", "product_id", "occurred_at", "source")
_REQUIRED_COLUMNS = frozenset(CSV_COLUMNS[:4])
_EXAMPLE = {"outcome_id": "crm-88121", "customer_id": "c-1001", "product_id": "caravan",
            "occurred_at": "2026-12-01T09:30:00Z", "source": "crm"}


class OutcomesAccepted(BaseModel):
    """Every outcome was acknowledged by the broker."""

    accepted: int = Field(examples=[1])
    outcome_ids: list[str] = Field(description="Ids of the accepted outcomes, in request order.")


def _too_many(count: int, limit: int) -> ApiError:
    return ApiError(413, f"too many outcomes: {count} in one request; the limit is {limit}",
                    details=[ErrorDetail(field="body", message=f"at most {limit} items")])


def parse_json(body: bytes, limit: int) -> list[Outcome]:
    """One outcome object or an array of them; any invalid item rejects the request (422 naming it)."""
    try:
        data = pydantic_core.from_json(body)
    except ValueError as error:
        raise ApiError(422, f"the body is not valid JSON: {error}", code="invalid_json") from None
    items = [data] if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ApiError(422, "the body must be one outcome object or a non-empty array of them")
    if len(items) > limit:
        raise _too_many(len(items), limit)
    try:
        if isinstance(data, dict):
            return [Outcome.model_validate(data)]
        return _OUTCOMES.validate_python(items)
    except ValidationError as error:
        raise validation_error(error) from None


def parse_csv(body: bytes, limit: int) -> list[Outcome]:
    """A CSV with a header of CSV_COLUMNS (source optional); errors name `line N`."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(422, "the CSV is not UTF-8", details=[ErrorDetail(field="body", message="not UTF-8")]
                       ) from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as error:
        raise ApiError(422, f"the CSV header is unreadable: {error}",
                       details=[ErrorDetail(field="header", message=str(error))]) from None
    if missing := sorted(_REQUIRED_COLUMNS - set(header)):
        raise ApiError(422, f"the CSV header lacks {', '.join(missing)}",
                       details=[ErrorDetail(field="header", message=f"missing column {m}") for m in missing])
    if unknown := [name for name in header if name not in CSV_COLUMNS]:
        raise ApiError(422, f"unknown CSV column {unknown[0][:40]!r}",
                       details=[ErrorDetail(field="header", message=f"unknown column {u[:40]!r}")
                                for u in unknown])
    try:
        return _rows(reader, header, limit)
    except csv.Error as error:
        line = reader.line_num
        raise ApiError(422, f"line {line}: {error}",
                       details=[ErrorDetail(field=f"line {line}", message=str(error))]) from None


def _rows(reader: Any, header: list[str], limit: int) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        if len(outcomes) >= limit:
            raise _too_many(len(outcomes) + 1, limit)
        if len(row) != len(header):
            raise ApiError(422, f"line {line}: {len(row)} fields, the header has {len(header)}",
                           details=[ErrorDetail(field=f"line {line}", message="wrong number of fields")])
        fields: dict[str, Any] = {name: cell.strip() for name, cell in zip(header, row, strict=True)}
        if not fields.get("source"):
            fields.pop("source", None)
        try:
            outcomes.append(Outcome.model_validate(fields))
        except ValidationError as error:
            raise validation_error(error, prefix=f"line {line}.") from None
    if not outcomes:
        raise ApiError(422, "the CSV has no data rows",
                       details=[ErrorDetail(field="body", message="no rows")])
    return outcomes


@router.post(
    "/outcomes",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Report purchases (outcomes)",
    description=(
        "Accepts one Outcome object, a JSON array of them, or a CSV (`Content-Type: text/csv`, header "
        "`outcome_id,customer_id,product_id,occurred_at[,source]`). Every item is validated "
        "(all-or-nothing): "
        "`product_id` must be one of the 22 products, `occurred_at` timezone-aware and not in the future. "
        "Each is published to `outcomes.v1` keyed by `customer_id`; **202 only after the broker acknowledged "
        "every record**. A repeated `outcome_id` is stored once, so retries are safe. Outcomes of customers "
        "without a prediction are kept and counted as unmatched (`GET /api/v1/models/performance`)."
    ),
    responses=error_responses(*AUTH_ERRORS, 413, 422, 503),
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"oneOf": [
            Outcome.model_json_schema(), {"type": "array", "items": Outcome.model_json_schema()}]},
            "example": _EXAMPLE},
        "text/csv": {"schema": {"type": "string"}, "example": ",".join(CSV_COLUMNS) + "\n"
                     + ",".join(str(_EXAMPLE[c]) for c in CSV_COLUMNS) + "\n"},
    }}},
)
async def publish_outcomes(request: Request, services: ServicesDep, _: EventsPrincipal) -> OutcomesAccepted:
    """Validate, publish and await all acks."""
    settings = services.settings
    body = await request.body()
    limit = settings.max_events_per_request
    if not body.strip():
        raise ApiError(422, "the body is empty: send outcomes as JSON or CSV",
                       details=[ErrorDetail(field="body", message="empty")])
    is_csv = request.headers.get("content-type", "").lower().startswith("text/csv")
    outcomes = parse_csv(body, limit) if is_csv else parse_json(body, limit)
    publisher = AckedPublisher(services.producer, topic_name(settings, topics.OUTCOMES), services.topics)
    try:
        await publisher.send_many(
            (outcome.customer_id.encode(), outcome.model_dump_json().encode()) for outcome in outcomes
        )
        await publisher.wait_acked()
    except Exception as error:
        publisher.abandon()
        log.error("outcome publish failed", extra={"outcomes": len(outcomes), "error": repr(error)})
        raise ApiError(503, "the broker did not acknowledge every outcome; retry the request (each "
                       "outcome_id is stored once however often it is sent)", code="publish_failed") from None
    if services.metrics is not None:
        services.metrics.events_published.labels(topics.OUTCOMES).inc(len(outcomes))
    return OutcomesAccepted(accepted=len(outcomes), outcome_ids=[o.outcome_id for o in outcomes])

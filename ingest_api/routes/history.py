"""A customer's decision history (`GET /api/v1/predictions/{customer_id}?history=N`); features for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from ingest_api.auth.principals import Principal
from ingest_api.deps import Services
from ingest_api.errors import ApiError, ErrorDetail
from schemas.messages import Reason, Recommendation, Segment
from store import predictions as stored

HISTORY_MAX = 1000
HistoryQuery = Annotated[
    int | None,
    Query(ge=1, le=HISTORY_MAX, description=(
        "Return the customer's latest N decisions (newest first) instead of the latest prediction; the "
        "feature values each was scored on are included for the admin scope only."
    )),
]


class Decision(BaseModel):
    """One stored prediction of a customer."""

    model_config = ConfigDict(frozen=True)

    event_id: UUID
    model_version: str
    recommendations: list[Recommendation]
    propensity: float
    segment: Segment
    reasons: dict[str, list[Reason]] | None = Field(default=None, description="When they were stored.")
    scored_at: datetime
    source: str
    trace_id: str | None = Field(
        default=None, description="W3C trace id of the trace it went through, when that trace was sampled.")
    features: dict[str, int] | None = Field(
        default=None,
        description="Admin scope only: the 86 values it was scored on, by column name (null: not logged).",
    )


class DecisionHistory(BaseModel):
    """A customer's latest decisions, newest first (LATEST_ORDER), under any model version."""

    customer_id: str
    decisions: list[Decision]
    features_included: bool = Field(description="True when the caller holds the admin scope.")


async def decision_history(
    services: Services, customer_id: str, count: int, principal: Principal
) -> DecisionHistory:
    """The latest `count` decisions from Postgres; 404 when the customer has none."""
    admin = principal.allows("admin")
    async with services.sessionmaker() as session:
        rows = await stored.prediction_history(session, customer_id, count)
    if not rows:
        raise ApiError(404, f"no prediction for customer {customer_id!r}",
                       details=[ErrorDetail(field="customer_id", message="no stored prediction")])
    decisions: list[Any] = [stored.prediction_history_entry(row, admin) for row in rows]
    return DecisionHistory.model_validate(
        {"customer_id": customer_id, "decisions": decisions, "features_included": admin}
    )

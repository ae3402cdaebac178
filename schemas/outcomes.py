"""The outcome contract (`outcomes.v1`): a customer bought a product at a time (schema version 1)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import AwareDatetime, Field, StringConstraints, field_validator

from schemas.features import PRODUCT_IDS
from schemas.messages import CUSTOMER_ID_PATTERN, Contract, CustomerId, utc_now

CARAVAN = "caravan"
"""The product the propensity model scores."""
OUTCOME_ID_MAX = 64
SOURCE_MAX = 32
CLOCK_SKEW = timedelta(minutes=5)
"""How far past this host's clock an `occurred_at` may lie (a sender's clock runs a little ahead)."""

OutcomeId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=OUTCOME_ID_MAX, pattern=f"^{CUSTOMER_ID_PATTERN}$"),
]
"""Same alphabet as a customer id: 1–64 letters, digits, `_ . @ -`, starting with a letter or digit."""
OutcomeSource = Annotated[
    str, StringConstraints(min_length=1, max_length=SOURCE_MAX, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
]


def check_product(value: str) -> str:
    """The product id if it is one of the 22 products (products.csv), else ValueError naming them."""
    if value not in PRODUCT_IDS:
        raise ValueError(f"unknown product {value[:40]!r}; expected one of: {', '.join(PRODUCT_IDS)}")
    return value


def check_not_future(value: datetime) -> datetime:
    """The time if it is not in the future (beyond CLOCK_SKEW), else ValueError."""
    if value > utc_now() + CLOCK_SKEW:
        raise ValueError(f"is in the future ({value.isoformat()}); an outcome reports a purchase made")
    return value


class Outcome(Contract):
    """A purchase: published on `outcomes.v1` keyed by customer_id; the sink stores each outcome_id once."""

    outcome_id: OutcomeId = Field(description="Idempotency key: a repeated id is stored once.")
    customer_id: CustomerId
    product_id: str = Field(description="One of the 22 product ids of products.csv (caravan included).")
    occurred_at: AwareDatetime = Field(description="When the customer bought it; never in the future.")
    source: OutcomeSource = Field(default="api", description="Where the outcome came from, e.g. `crm`.")

    @field_validator("product_id")
    @classmethod
    def _product(cls, value: str) -> str:
        return check_product(value)

    @field_validator("occurred_at")
    @classmethod
    def _past(cls, value: datetime) -> datetime:
        return check_not_future(value)

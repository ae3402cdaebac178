"""The outcome contract: what it accepts and refuses, and its documented copy in docs/consumers.md."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.asyncapi import asyncapi_document
from schemas import topics
from schemas.features import PRODUCT_IDS
from schemas.outcomes import Outcome

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"outcome_id": "crm-1", "customer_id": "c-1", "product_id": "caravan",
        "occurred_at": "2026-11-01T10:00:00Z"}


def test_every_product_of_products_csv_and_a_default_source() -> None:
    assert len(PRODUCT_IDS) == 22
    for product in PRODUCT_IDS:
        assert Outcome.model_validate({**GOOD, "product_id": product}).source == "api"


@pytest.mark.parametrize(("change", "field"), [
    ({"product_id": "yacht"}, "product_id"),
    ({"occurred_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, "occurred_at"),
    ({"occurred_at": "2026-11-01T10:00:00"}, "occurred_at"),
    ({"outcome_id": "x" * 65}, "outcome_id"),
    ({"source": "CRM system"}, "source"),
])
def test_bad_fields_are_named(change: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        Outcome.model_validate({**GOOD, **change})
    assert [e["loc"] for e in error.value.errors()] == [(field,)]


def test_the_documented_schema_and_the_asyncapi_channel_match_the_code() -> None:
    text = (ROOT / "docs" / "consumers.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- outcome-schema:start -->\n```json\n(.*?)\n```", text, re.DOTALL)
    assert block and json.loads(block.group(1)) == Outcome.model_json_schema()
    document = asyncapi_document()
    assert topics.OUTCOMES in {c["address"] for c in document["channels"].values()}
    assert "Outcome" in document["components"]["schemas"]

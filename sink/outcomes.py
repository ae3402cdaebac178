"""The sink's outcomes.v1 records: validate each against the contract, store each outcome_id once."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.messages import DeadLetter
from schemas.outcomes import Outcome
from schemas.wire import SourceRecord, dead_letter, error_stage, iso_utc, validation_reason
from store.outcomes import OutcomeRow, store_outcomes


def parse_outcomes(
    records: Sequence[SourceRecord],
) -> tuple[list[OutcomeRow], list[tuple[bytes | None, DeadLetter]]]:
    """Storable rows, and a dead letter naming the bad fields for each record that is not an Outcome."""
    rows: list[OutcomeRow] = []
    dead: list[tuple[bytes | None, DeadLetter]] = []
    for record in records:
        value = record.value or b""
        try:
            outcome = Outcome.model_validate_json(value)
        except ValidationError as error:
            reason = f"invalid outcome: {validation_reason(error)}"
            dead.append((record.key, dead_letter(record, error_stage(error), reason)))
            continue
        if b"\\u0000" in value:  # Postgres text cannot hold NUL; the id patterns already exclude it
            dead.append((record.key, dead_letter(record, "validation", "invalid outcome: NUL character")))
            continue
        rows.append(OutcomeRow(outcome.outcome_id, outcome.customer_id, outcome.product_id,
                               iso_utc(outcome.occurred_at), outcome.source))
    return rows, dead


async def write_outcomes(session: AsyncSession, rows: Sequence[OutcomeRow]) -> int:
    """The sink's outcome transaction body: the rows newly stored (repeats of an outcome_id skipped)."""
    return await store_outcomes(session, rows)

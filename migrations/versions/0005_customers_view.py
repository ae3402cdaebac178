"""customers becomes a view over predictions: the sink writes one table less per batch

Revision ID: 0005_customers_view
Revises: 0004_shadow
Create Date: 2026-12-02 14:20:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0005_customers_view'
down_revision: str | None = '0004_shadow'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same columns the table had. The latest prediction is by LATEST_ORDER (store/predictions.py):
# greatest scored_at, ties by id. A filter on customer_id reaches both subqueries, so one customer's row
# costs an index lookup (ix_predictions_customer_scored), not a scan.
_LATEST = """
SELECT counted.customer_id, latest.event_id AS last_event_id, latest.model_version, latest.propensity,
       latest.scored_at AS last_scored_at, counted.first_seen_at, counted.predictions_count
FROM (
    SELECT customer_id, min(stored_at) AS first_seen_at, CAST(count(*) AS integer) AS predictions_count
    FROM predictions GROUP BY customer_id
) AS counted
CROSS JOIN LATERAL (
    SELECT event_id, model_version, propensity, scored_at FROM predictions AS p
    WHERE p.customer_id = counted.customer_id
    ORDER BY scored_at DESC, id DESC
    LIMIT 1
) AS latest
"""


def upgrade() -> None:
    op.drop_table('customers')
    op.execute(f"CREATE VIEW customers AS {_LATEST}")


def downgrade() -> None:
    op.execute("DROP VIEW customers")
    op.execute(
        "CREATE TABLE customers (customer_id varchar(64) PRIMARY KEY, last_event_id uuid NOT NULL, "
        "model_version varchar(64) NOT NULL, propensity float8 NOT NULL, "
        "last_scored_at timestamptz NOT NULL, first_seen_at timestamptz NOT NULL DEFAULT now(), "
        "predictions_count integer NOT NULL DEFAULT 1)"
    )
    op.execute(f"INSERT INTO customers {_LATEST}")

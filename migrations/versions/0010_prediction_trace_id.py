"""predictions.trace_id: the trace a sampled prediction went through (issue #28), for the dashboard's link

Revision ID: 0010_prediction_trace_id
Revises: 0009_dead_letter_redrive
Create Date: 2026-12-06 20:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010_prediction_trace_id'
down_revision: str | None = '0009_dead_letter_redrive'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable without a default: a metadata-only change, no table rewrite; untraced rows stay NULL (no bytes).
    op.add_column('predictions', sa.Column('trace_id', sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column('predictions', 'trace_id')

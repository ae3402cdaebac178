"""replay outcomes: a replay's live-quality figures of the served and the replayed predictions

Revision ID: 0011_replay_outcomes
Revises: 0010_prediction_trace_id
Create Date: 2026-12-06 21:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0011_replay_outcomes'
down_revision: str | None = '0010_prediction_trace_id'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('replays', sa.Column('outcomes', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('replays', 'outcomes')

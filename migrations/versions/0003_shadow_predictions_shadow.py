"""predictions_shadow: the shadow model version's predictions

Revision ID: 0003_shadow
Revises: 0002
Create Date: 2026-12-01 22:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003_shadow'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('predictions_shadow',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('batch_id', sa.UUID(), nullable=True),
    sa.Column('recommendations', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('propensity', sa.Float(), nullable=False),
    sa.Column('segment_label', sa.String(length=8), nullable=False),
    sa.Column('segment_score', sa.Float(), nullable=False),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', 'model_version', name='uq_predictions_shadow_event_version')
    )
    op.create_index('ix_predictions_shadow_version_id', 'predictions_shadow', ['model_version', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_predictions_shadow_version_id', table_name='predictions_shadow')
    op.drop_table('predictions_shadow')

"""outcomes: purchases reported after scoring, stored once per outcome_id; the join's indexes

Revision ID: 0007_outcomes
Revises: 0006_identifier_collation
Create Date: 2026-12-06 19:50:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007_outcomes'
down_revision: str | None = '0006_identifier_collation'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The join (store/outcome_join.py) looks up each outcome's latest earlier prediction by customer:
# predictions has ix_predictions_customer_scored since 0001; predictions_shadow gets its twin here.
# ix_outcomes_customer_product serves the "caravan bought within this prediction's horizon" probe.


def upgrade() -> None:
    op.create_table('outcomes',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('outcome_id', sa.String(length=64, collation='C'), nullable=False),
    sa.Column('customer_id', sa.String(length=64, collation='C'), nullable=False),
    sa.Column('product_id', sa.String(length=32, collation='C'), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('outcome_id', name='uq_outcomes_outcome_id'),
    )
    op.create_index('ix_outcomes_customer_product', 'outcomes', ['customer_id', 'product_id', 'occurred_at'])
    op.create_index('ix_outcomes_occurred', 'outcomes', ['occurred_at'])
    op.create_index('ix_predictions_shadow_customer_scored', 'predictions_shadow', ['customer_id', 'scored_at'])


def downgrade() -> None:
    op.drop_index('ix_predictions_shadow_customer_scored', table_name='predictions_shadow')
    op.drop_index('ix_outcomes_occurred', table_name='outcomes')
    op.drop_index('ix_outcomes_customer_product', table_name='outcomes')
    op.drop_table('outcomes')

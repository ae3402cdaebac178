"""outcome links: the performance question's pre-aggregate of (outcome, prediction) links, per horizon

Revision ID: 0013_outcome_links
Revises: 0012_prediction_chunks
Create Date: 2026-12-06 23:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013_outcome_links'
down_revision: str | None = '0012_prediction_chunks'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# store/outcome_links.py owns both tables. Per horizon (microseconds), every pair of an outcome with an id up
# to the outcome watermark and a prediction (tbl 0 predictions, 1 predictions_shadow) with an id up to its
# table's watermark that the link rule joins. The primary key refuses a pair packed twice.


def upgrade() -> None:
    op.create_table('outcome_links',
    sa.Column('horizon_us', sa.BigInteger(), nullable=False),
    sa.Column('oid', sa.BigInteger(), nullable=False),
    sa.Column('tbl', sa.SmallInteger(), nullable=False),
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('model_version', sa.String(length=64, collation='C'), nullable=False),
    sa.Column('product_id', sa.String(length=32, collation='C'), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('hit', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('horizon_us', 'oid', 'tbl', 'id'),
    )
    op.create_table('outcome_link_watermarks',
    sa.Column('horizon_us', sa.BigInteger(), nullable=False),
    sa.Column('last_outcome', sa.BigInteger(), nullable=False),
    sa.Column('last0', sa.BigInteger(), nullable=False),
    sa.Column('last1', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('horizon_us'),
    )


def downgrade() -> None:
    op.drop_table('outcome_link_watermarks')
    op.drop_table('outcome_links')

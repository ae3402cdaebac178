"""faults: cache_repair table, bounded dead-letter payload fields

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'cache_repair',
        sa.Column('customer_id', sa.String(length=64), nullable=False),
        sa.Column('model_version', sa.String(length=64), nullable=False),
        sa.Column('noted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('customer_id', 'model_version'),
    )
    op.add_column('dead_letters', sa.Column('payload_encoding', sa.String(length=8), nullable=True))
    op.add_column('dead_letters', sa.Column('payload_size', sa.Integer(), nullable=True))
    op.add_column('dead_letters', sa.Column('payload_sha256', sa.String(length=64), nullable=True))
    op.add_column('dead_letters', sa.Column('payload_truncated', sa.Boolean(), nullable=True))


def downgrade() -> None:
    for column in ('payload_truncated', 'payload_sha256', 'payload_size', 'payload_encoding'):
        op.drop_column('dead_letters', column)
    op.drop_table('cache_repair')

"""dead-letter redrive: original key, redrive count and status of each letter; the redrive log

Revision ID: 0009_dead_letter_redrive
Revises: 0008_feature_log
Create Date: 2026-12-06 20:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009_dead_letter_redrive'
down_revision: str | None = '0008_feature_log'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('dead_letters', sa.Column('source_key', sa.LargeBinary(), nullable=True))
    op.add_column('dead_letters', sa.Column('redrive_count', sa.Integer(), server_default='0', nullable=False))
    op.add_column('dead_letters', sa.Column('status', sa.String(length=12), server_default='open',
                                            nullable=False))
    op.create_index('ix_dead_letters_failed_at', 'dead_letters', ['failed_at'], unique=False)
    op.create_table(
        'dead_letter_redrives',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('dead_letter_id', sa.BigInteger(), nullable=False),
        sa.Column('outcome', sa.String(length=12), nullable=False),
        sa.Column('redrive_count', sa.Integer(), nullable=False),
        sa.Column('redriven_by', sa.String(length=128), nullable=False),
        sa.Column('redriven_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('target_topic', sa.String(length=255), nullable=False),
        sa.Column('target_partition', sa.Integer(), nullable=True),
        sa.Column('target_offset', sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(['dead_letter_id'], ['dead_letters.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_dead_letter_redrives_letter', 'dead_letter_redrives', ['dead_letter_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_dead_letter_redrives_letter', table_name='dead_letter_redrives')
    op.drop_table('dead_letter_redrives')
    op.drop_index('ix_dead_letters_failed_at', table_name='dead_letters')
    for column in ('status', 'redrive_count', 'source_key'):
        op.drop_column('dead_letters', column)

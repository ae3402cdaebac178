"""prediction chunks: the performance question's pre-aggregate of the window columns, per version and day

Revision ID: 0012_prediction_chunks
Revises: 0011_replay_outcomes
Create Date: 2026-12-06 22:45:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012_prediction_chunks'
down_revision: str | None = '0011_replay_outcomes'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# store/prediction_chunks.py owns both tables. A chunk holds, per table (0 predictions, 1 predictions_shadow),
# model version and UTC day of scored_at, three packed big-endian columns of every prediction with an id up
# to its table's watermark: key (id * 2 + table), propensity, scored_at (microseconds since 2000-01-01).
# Random floats do not compress: EXTERNAL storage skips pglz both ways.
_PACKED = ('keys', 'propensity', 'scored')


def upgrade() -> None:
    op.create_table('prediction_chunks',
    sa.Column('tbl', sa.SmallInteger(), nullable=False),
    sa.Column('model_version', sa.String(length=64, collation='C'), nullable=False),
    sa.Column('day', sa.Integer(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    *(sa.Column(name, sa.LargeBinary(), nullable=False) for name in _PACKED),
    sa.PrimaryKeyConstraint('tbl', 'model_version', 'day'),
    )
    for name in _PACKED:
        op.execute(f'ALTER TABLE prediction_chunks ALTER COLUMN {name} SET STORAGE EXTERNAL')
    op.create_table('prediction_chunk_watermarks',
    sa.Column('tbl', sa.SmallInteger(), nullable=False),
    sa.Column('last_id', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tbl'),
    )
    op.execute('INSERT INTO prediction_chunk_watermarks (tbl, last_id) VALUES (0, 0), (1, 0)')


def downgrade() -> None:
    op.drop_table('prediction_chunk_watermarks')
    op.drop_table('prediction_chunks')

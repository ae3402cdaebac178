"""feature log: each prediction's 86 feature values (bytea); replays of a window through a model version

Revision ID: 0008_feature_log
Revises: 0007_outcomes
Create Date: 2026-12-06 20:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0008_feature_log'
down_revision: str | None = '0007_outcomes'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# bytea of 86 bytes (byte i = feature i): 87 bytes on disk with its short header, against 196 for a
# smallint[] (pg_column_size; tests/store/test_feature_log.py). A BRIN index on scored_at finds a replay's
# window on an append-mostly table for a few pages of index, and costs the sink's inserts next to nothing.
_IDENTIFIER = sa.String(length=64, collation='C')


def upgrade() -> None:
    op.add_column('predictions', sa.Column('features', sa.LargeBinary(), nullable=True))
    op.create_index('ix_predictions_scored_brin', 'predictions', ['scored_at'], postgresql_using='brin')
    op.create_table('replays',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('model_version', _IDENTIFIER, nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.Column('until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('rows', sa.Integer(), server_default='0', nullable=False),
    sa.Column('exact_agreement', sa.Float(), nullable=True),
    sa.Column('top3_agreement', sa.Float(), nullable=True),
    sa.Column('top3_set_agreement', sa.Float(), nullable=True),
    sa.Column('propensity_spearman', sa.Float(), nullable=True),
    sa.Column('segment_agreement', sa.Float(), nullable=True),
    sa.Column('served_versions', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('requested_by', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_replays_version_finished', 'replays', ['model_version', 'finished_at'])
    op.create_table('predictions_replay',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('replay_id', sa.UUID(), nullable=False),
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('customer_id', _IDENTIFIER, nullable=False),
    sa.Column('model_version', _IDENTIFIER, nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('batch_id', sa.UUID(), nullable=True),
    sa.Column('recommendations', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('propensity', sa.Float(), nullable=False),
    sa.Column('segment_label', sa.String(length=8), nullable=False),
    sa.Column('segment_score', sa.Float(), nullable=False),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.ForeignKeyConstraint(['replay_id'], ['replays.id'], ondelete='CASCADE'),
    )
    op.create_index('ix_predictions_replay_replay_event', 'predictions_replay', ['replay_id', 'event_id'])


def downgrade() -> None:
    op.drop_table('predictions_replay')
    op.drop_table('replays')
    op.drop_index('ix_predictions_scored_brin', table_name='predictions')
    op.drop_column('predictions', 'features')

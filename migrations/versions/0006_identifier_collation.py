"""customer and model-version identifiers compare bytewise (COLLATE "C"); segments keep room for HOT updates

Revision ID: 0006_identifier_collation
Revises: 0005_customers_view
Create Date: 2026-12-04 02:10:00
"""
import importlib
from collections.abc import Sequence

from alembic import op

revision: str = '0006_identifier_collation'
down_revision: str | None = '0005_customers_view'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Identifiers are opaque: a linguistic collation orders them for no reader, costs a strcoll (and copies)
# per comparison in every index insert and in the sink's DISTINCT ON, and can reorder an index under a C
# library upgrade. A fill factor of 70 leaves room on each segments page, so re-scoring a customer whose
# label stays is a heap-only update (no new index entries). Sink store statement, half of each batch
# re-scored customers: Postgres 14.3 -> 13.1 µs per row, wall 16.7 -> 15.5 (bench/bench_sink_store.py --rows 4000).
_TABLES = ('predictions', 'predictions_shadow', 'segments', 'cache_repair')
_IDENTIFIERS = ('customer_id', 'model_version')
_CUSTOMERS_VIEW = importlib.import_module('migrations.versions.0005_customers_view')._LATEST


def _collate(collation: str) -> None:
    op.execute('DROP VIEW customers')  # a column a view reads cannot change its type
    changes = ', '.join(f'ALTER COLUMN {c} TYPE varchar(64) COLLATE {collation}' for c in _IDENTIFIERS)
    for table in _TABLES:
        op.execute(f'ALTER TABLE {table} {changes}')
    op.execute(f'CREATE VIEW customers AS {_CUSTOMERS_VIEW}')


def upgrade() -> None:
    _collate('"C"')
    op.execute('ALTER TABLE segments SET (fillfactor = 70)')


def downgrade() -> None:
    op.execute('ALTER TABLE segments RESET (fillfactor)')
    _collate('"default"')

"""Run Alembic programmatically, so `streamscore migrate` works from any directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from infra.settings import DatabaseSettings


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations and the given (or configured) database."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url or DatabaseSettings().database_url)
    return config


def upgrade_head(database_url: str | None = None) -> None:
    """Apply every migration up to head."""
    command.upgrade(alembic_config(database_url), "head")


def downgrade_base(database_url: str | None = None) -> None:
    """Revert every migration (used by tests of the migrations themselves)."""
    command.downgrade(alembic_config(database_url), "base")

"""Alembic migrations for the StreamScore database."""

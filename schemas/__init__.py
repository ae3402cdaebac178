"""Versioned message and API contracts shared by every StreamScore service (no I/O, no settings)."""

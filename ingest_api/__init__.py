"""The FastAPI ingest and scoring API."""

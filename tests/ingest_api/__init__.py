"""Tests of ingest_api."""

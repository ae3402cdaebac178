"""The ingest routes: events, scoring, predictions, health."""

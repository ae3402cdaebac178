"""Plumbing shared by every service: settings, Kafka, database, logging, processes, stats, consumers."""

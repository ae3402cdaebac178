"""Helpers shared by the test packages (never imported by production code)."""

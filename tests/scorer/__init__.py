"""Tests of scorer."""

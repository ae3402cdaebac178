"""Tests of streamscore."""

"""Tests of sink."""

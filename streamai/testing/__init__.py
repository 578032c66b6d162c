"""Helpers for tests and benchmarks: synthetic media with machine-readable markers."""

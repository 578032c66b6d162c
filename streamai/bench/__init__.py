"""Benchmarks, one module each; ``streamai bench NAME`` runs them and writes JSON."""

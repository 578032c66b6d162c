"""The small web layer node and router share: credentials, error JSON, entry protection, metrics."""

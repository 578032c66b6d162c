"""Subcommands of the ``streamai`` CLI, one a module."""

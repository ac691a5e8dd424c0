"""The project's one exception for bad input, :class:`ConfigError`, in a module of its own so
that a command can catch it without importing YAML or pydantic (start-up: issue 29);
:mod:`scaling.io.errors` (where messages are made) exports it too."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """Bad input: the message is one line meant for the user (the CLI exits with code 2)."""

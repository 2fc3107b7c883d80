"""The one exception type that means "the user gave us something wrong"; the CLI turns it into exit code 2."""

from __future__ import annotations

__all__ = ["UserError", "ConfigError"]


class UserError(Exception):
    """A problem with the user's input (file, flag, dataset, checkpoint): reported in one line, exit code 2."""


class ConfigError(UserError):
    """A malformed configuration: unknown key, wrong type, bad value."""

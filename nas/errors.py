"""The one exception type that means "the user gave us something wrong"; the CLI turns it into exit code 2."""

from __future__ import annotations

__all__ = ["UserError", "ConfigError", "UnknownNameError", "DivergedError", "WriteError"]


class UserError(Exception):
    """A problem with the user's input (file, flag, dataset, checkpoint): reported in one line, exit code 2."""


class ConfigError(UserError):
    """A malformed configuration: unknown key, wrong type, bad value."""


class UnknownNameError(UserError, ValueError):
    """A name that no registry holds (dataset, KD loss, space, baseline, ...); a ValueError too, for library
    callers that catch those."""


class DivergedError(UserError, FloatingPointError):
    """A loss became NaN or infinite (see :func:`nas.losses.check_finite`); a FloatingPointError too, so a caller
    can catch a distillation term's divergence and say which stage diverged."""


class WriteError(UserError, OSError):
    """A file could not be written (disk full, file too large, read-only, no permission); raised by the atomic
    writers of :mod:`nas.io`, so the previous version of the file is intact. Still an ``OSError`` (``errno``,
    ``strerror``, ``filename``) for callers that catch those."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror} (its previous version, if any, is unchanged)"

"""One job per run folder: a lock file holding the owner's pid, refused while that process lives.

`RunLock(folder)` creates ``folder/.lock`` exclusively (``O_CREAT | O_EXCL``) with the pid, host and start time.
Another live process's lock is a one-line UserError naming that pid; a lock whose process is gone (killed,
crashed, machine restarted) is stale and taken over. The same process may take the lock again (``nas run``
holds it while its stages open it again), and it is released when the outermost holder exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from nas.errors import UserError

__all__ = ["LOCK_NAME", "RunLock", "job_lock", "lock_holder"]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_HELD: dict[Path, int] = {}  # lock path → how many times this process holds it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def lock_holder(folder: str | Path) -> dict | None:
    """The lock record of a live holder of `folder` (pid, host, started), or None when free or stale."""
    path = Path(folder) / LOCK_NAME
    try:
        record = json.loads(path.read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    same_host = record.get("host") in (None, socket.gethostname())
    return record if (not same_host or _alive(pid)) else None


class RunLock(contextlib.AbstractContextManager):
    """Hold ``folder/.lock`` for the duration of a ``with`` block (see the module docstring)."""

    def __init__(self, folder: str | Path, what: str = "job"):
        self.path = Path(folder).resolve() / LOCK_NAME
        self.what = what

    def _write(self) -> bool:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "job": self.what,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        return True

    def __enter__(self) -> RunLock:
        self.created: list[Path] = []
        if self.path in _HELD:
            _HELD[self.path] += 1
            return self
        folder = self.path.parent
        self.created = [p for p in (folder, *folder.parents) if not p.exists()]  # removed again if left empty
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the run folder {self.path.parent}: {exc.strerror or exc}") from None
        for _ in range(3):
            if self._write():
                _HELD[self.path] = 1
                return self
            holder = lock_holder(self.path.parent)
            if holder is not None and int(holder["pid"]) != os.getpid():
                self._remove_created()
                raise UserError(f"run folder {self.path.parent} is in use by a {holder.get('job', 'job')} "
                                f"(pid {holder['pid']} on {holder.get('host', '?')}, since {holder.get('started', '?')}); "
                                f"wait for it or stop it")
            log.info("taking over the stale lock %s of a job that is no longer running", self.path)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        raise UserError(f"could not take the lock {self.path}: another job keeps creating it")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        count = _HELD.get(self.path, 0) - 1
        if count > 0:
            _HELD[self.path] = count
            return
        _HELD.pop(self.path, None)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._remove_created()

    def _remove_created(self) -> None:
        """Remove the folders this lock created, where they are empty: a refused job leaves none behind."""
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                break


def job_lock(folder: str | Path, what: str) -> contextlib.AbstractContextManager:
    """The run folder's lock for a single-process job; under torchrun a no-op (the ranks of one job share the
    folder, and rank 0 alone writes to it)."""
    if "WORLD_SIZE" in os.environ and os.environ.get("WORLD_SIZE") != "1":
        return contextlib.nullcontext()
    return RunLock(folder, what)

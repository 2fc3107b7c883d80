"""Files that must never be half-written: atomic writes, safe checkpoints, run directories, metrics CSV."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

import torch

from nas import __version__
from nas.config import config_hash, dump_yaml
from nas.errors import UserError, WriteError

__all__ = [
    "atomic_write_stream",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_csv",
    "read_json",
    "save_checkpoint",
    "load_checkpoint",
    "resume_checkpoint",
    "kept_checkpoint",
    "RunDir",
    "MetricsLog",
]

log = logging.getLogger(__name__)


def atomic_write_stream(path: str | Path, source: BinaryIO) -> Path:
    """Copy the file object `source` to a temp file beside `path`, fsync it, then rename over `path` (all or
    nothing), in 1 MiB chunks so that large artifacts are never held in memory. A failed write (disk full,
    file too large, read-only, no permission) removes the temp file and raises :class:`~nas.errors.WriteError`:
    the previous `path` is untouched."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            while chunk := source.read(1 << 20):
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError) and exc.errno is not None:
            raise WriteError(exc.errno, exc.strerror, str(path)) from None
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temp file beside `path`, fsync it, then rename over `path` (all or nothing)."""
    return atomic_write_stream(path, io.BytesIO(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def atomic_write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write `rows` as CSV atomically; the columns are the union of the rows' keys in first-seen order (a row
    without a key leaves its cell empty)."""
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Read JSON; a missing, truncated or malformed file is a one-line UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{what} {p} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise UserError(f"{what} {p} is nested too deeply to be read") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's digit limit
        raise UserError(f"{what} {p} is not valid JSON: {str(exc).splitlines()[0][:120]}") from None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """`torch.save` into memory, then an atomic write: an interrupted save leaves the previous file intact."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (no code runs); a corrupt or foreign file is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt / unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {p} cannot be loaded safely: {first[:200]}") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {p} does not hold a state dictionary")
    return state


class MetricsLog:
    """One CSV per run, a row per epoch; columns grow as new keys appear (the file is rewritten atomically)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            with self.path.open(newline="") as fh:
                self.rows = [dict(r) for r in csv.DictReader(fh)]

    def truncate(self, n_rows: int) -> None:
        """Keep the first `n_rows` rows (used on resume so rows after the checkpoint are redone, not doubled)."""
        self.rows = self.rows[:n_rows]
        self._flush()

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append({k: _fmt(v) for k, v in row.items()})
        self._flush()

    def _flush(self) -> None:
        atomic_write_csv(self.path, self.rows)


def _fmt(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def resume_checkpoint(ckpt: Path, resume: bool, what: str) -> dict[str, Any] | None:
    """The checkpoint `ckpt` to resume from, or None for a fresh run; refuses a fresh start over an existing
    checkpoint and a resume without one, so that no finished work is overwritten by mistake. `what` names the
    job in the message ("a search", "a training run")."""
    if not resume and ckpt.is_file():
        raise UserError(f"{ckpt.parent} already holds {what}: pass --resume to continue it or choose another --name")
    if resume and not ckpt.is_file():
        raise UserError(f"nothing to resume: {ckpt} does not exist")
    return load_checkpoint(ckpt) if resume else None


def kept_checkpoint(ckpt: Path) -> str:
    """What a job stopped by an error leaves to resume from, for the end of its one-line message."""
    if ckpt.is_file():
        return f"the last good checkpoint is kept in {ckpt}: fix the cause, then continue with --resume"
    return f"no epoch had finished, so {ckpt.parent} holds no checkpoint yet"


class RunDir:
    """`runs/<name>/`: resolved config, metrics CSV, log file, checkpoints and outputs of one job."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, cfg: Any, root: str | Path | None = None, name: str | None = None) -> RunDir:
        """Make the folder, save the resolved config and provenance, attach a log file; remove the temp files of
        a predecessor killed mid-write (SIGKILL skips the atomic writers' clean-up; the real files are intact)."""
        from nas.device import device_provenance, resolve_device

        device = device_provenance(resolve_device(cfg.run.device))  # a device that is not there: nothing made
        root = Path(root if root is not None else cfg.run.root)
        run = cls(root / (name if name is not None else cfg.run.name))
        run.path.mkdir(parents=True, exist_ok=True)
        for stale in run.path.glob(".*.tmp"):  # one job per run folder: no other writer's temp file is here
            stale.unlink(missing_ok=True)
        atomic_write_text(run.path / "config.yaml", dump_yaml(cfg))
        atomic_write_json(
            run.path / "provenance.json",
            {
                "nas_version": __version__,
                "torch_version": torch.__version__,
                "config_hash": config_hash(cfg),
                "seed": cfg.run.seed,
                **device,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        run.attach_log()
        return run

    def attach_log(self) -> None:
        """Send the library's log records to `<run>/log.txt` as well as the console. The log of an enclosing run
        (a pipeline's, for its teacher and student) keeps receiving them; a sibling run's, which one process may
        have opened before (a benchmark training network after network), stops, so its log holds its own run."""
        run = self.path.resolve()
        target = str(run / "log.txt")
        root = logging.getLogger()
        for h in list(root.handlers):
            owner = getattr(h, "nas_run", None)
            if owner is not None and owner != run and owner not in run.parents:
                root.removeHandler(h)
                h.close()
        if any(getattr(h, "baseFilename", None) == target for h in root.handlers):
            return
        handler = logging.FileHandler(target)
        handler.nas_run = run  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def metrics(self) -> MetricsLog:
        return MetricsLog(self.path / "metrics.csv")

"""Where a study lives: the storage (SQLite, journal file, PostgreSQL), its artifact folder, loading by name.

Storage URLs:

- ``sqlite:///runs/studies/studies.db`` — the default (under `study.root`): embedded, one machine, a few workers.
- ``journal:runs/studies/studies.log`` (or any path ending in ``.log``) — Optuna's journal file: append-only,
  safe for several processes on one machine or a shared file system that supports its lock.
- ``postgresql+psycopg2://user@host:5432/db`` — many workers on many machines (the `postgres` extra).

Database storages run a heartbeat per trial: a trial whose worker died is failed after `study.grace_s` seconds
and re-queued, with the same parameters, by :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` (the
non-deprecated name of ``RetryFailedTrialCallback`` in Optuna ≥ 4.9). An unreachable storage, or a study that
does not exist, is a one-line :class:`~nas.errors.UserError`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from nas.errors import UserError
from nas.io import atomic_write_stream

__all__ = [
    "STORAGE_FILE",
    "default_storage_url",
    "describe_url",
    "storage_file",
    "open_storage",
    "load_study",
    "artifact_dir",
    "AtomicArtifactStore",
    "safe_artifact_name",
    "file_lock",
]

log = logging.getLogger(__name__)

STORAGE_FILE = "studies.db"
_JOURNAL_PREFIX = "journal:"
_RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_storage_url(root: str | Path) -> str:
    """The embedded default: ``sqlite:///<root>/studies.db``."""
    return f"sqlite:///{Path(root) / STORAGE_FILE}"


def describe_url(url: str) -> str:
    """The URL with any password masked (safe to print and to store)."""
    if "://" in url and "@" in url:
        try:
            from sqlalchemy.engine import make_url

            return make_url(url).render_as_string(hide_password=True)
        except Exception:  # not a database URL: mask conservatively
            return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
    return url


def _scheme(url: str) -> str:
    if url.startswith(_JOURNAL_PREFIX) or (("://" not in url) and url.endswith((".log", ".jsonl"))):
        return "journal"
    if "://" in url:
        return url.split("://", 1)[0].split("+", 1)[0].lower()
    return ""


def storage_file(url: str) -> Path | None:
    """The local file behind a SQLite or journal URL, else None (a database server)."""
    kind = _scheme(url)
    if kind == "journal":
        return Path(url[len(_JOURNAL_PREFIX):] if url.startswith(_JOURNAL_PREFIX) else url)
    if kind == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path or path.startswith(":memory:"):
            raise UserError(f"study storage {url!r}: use a SQLite file (sqlite:///path/studies.db), not memory")
        return Path(path.split("?", 1)[0])
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def open_storage(url: str, create: bool = False, heartbeat_s: int | None = None, grace_s: int | None = None,
                 retries: int | None = None) -> Any:
    """An Optuna storage for `url`. Without `create`, a missing SQLite / journal file is an error (a typo
    would otherwise create an empty storage); with `heartbeat_s`, database storages fail and retry trials
    whose worker stopped beating."""
    import optuna

    kind = _scheme(url)
    shown = describe_url(url)
    if kind not in ("journal", *_RDB_SCHEMES):
        raise UserError(f"study storage {shown!r} is not a sqlite:///FILE, journal:FILE or postgresql://... URL")
    path = storage_file(url)
    if path is not None:
        if not create and not path.is_file():
            raise UserError(f"no study storage at {path} (run `nas study run` first, or pass --storage URL)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the folder of the study storage {path}: {exc.strerror or exc}") from None
    try:
        if kind == "journal":
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(str(path)))
        if kind == "postgresql":
            try:
                import psycopg2  # noqa: F401
            except ImportError:
                raise UserError("a PostgreSQL study storage needs the 'postgres' extra (psycopg2 is not installed): "
                                "pip install '.[postgres]'") from None
        engine: dict[str, Any] = {"pool_pre_ping": True}
        if kind == "sqlite":
            engine["connect_args"] = {"timeout": 120}  # several local workers wait for the file lock
        elif kind == "postgresql":
            engine["connect_args"] = {"connect_timeout": 10}
        kwargs: dict[str, Any] = {}
        with warnings.catch_warnings():  # Optuna marks heartbeats experimental: not a warning per command
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat_s:
                kwargs = {"heartbeat_interval": int(heartbeat_s), "grace_period": int(grace_s or 2 * heartbeat_s),
                          "heartbeat_stale_trial_callback":
                              optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)}
            return _create_rdb(url, engine, kwargs, path)
    except UserError:
        raise
    except Exception as exc:  # sqlalchemy / driver / file errors: all mean "cannot use this storage"
        raise UserError(f"cannot open the study storage {shown}: {_first_line(exc)}") from None


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (fcntl), held for the `with` block; other processes wait."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _create_rdb(url: str, engine: dict[str, Any], kwargs: dict[str, Any], path: Path | None) -> Any:
    """RDBStorage, whose first use creates the schema: workers starting together on a fresh database race
    to create it (a duplicate `alembic_version` table or row), so they take turns: a SQLite file is opened under
    a file lock beside it, a server's database under a lock of the server's own (:func:`_schema_lock`); a race
    that still surfaces (another tool creating the tables) is retried."""
    import optuna

    if path is not None:
        with file_lock(path.with_name(path.name + ".lock")):
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
    for attempt in range(5):
        try:
            with _schema_lock(url, engine):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
        except Exception as exc:
            text = f"{type(exc).__name__} {exc}"
            racing = any(s in text for s in ("IntegrityError", "UniqueViolation", "DuplicateTable", "already exists"))
            if not racing or attempt == 4:
                raise
            log.info("another worker is creating the study tables; retrying")
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


SCHEMA_LOCK_KEY = 0x6E61735F7374  # "nas_st": the PostgreSQL advisory lock workers take while creating the schema


@contextlib.contextmanager
def _schema_lock(url: str, engine: dict[str, Any]) -> Iterator[None]:
    """Hold the server's lock for creating the study tables: a session-level advisory lock on PostgreSQL, a
    named lock on MySQL; released (and the connection closed) after the block, or by the server if the worker
    dies."""
    import sqlalchemy

    kind = _scheme(url)
    take, give = {
        "postgresql": ("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"),
        "mysql": ("SELECT GET_LOCK(CAST(:key AS CHAR), 600)", "SELECT RELEASE_LOCK(CAST(:key AS CHAR))"),
    }[kind]
    eng = sqlalchemy.create_engine(url, **engine)
    try:
        with eng.connect() as conn:
            conn.execute(sqlalchemy.text(take), {"key": SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(give), {"key": SCHEMA_LOCK_KEY})
    finally:
        eng.dispose()


def load_study(name: str, storage: Any, url: str = "") -> Any:
    """The study `name` in `storage`; an unknown name is a UserError listing the known ones."""
    import optuna

    try:
        names = optuna.get_all_study_names(storage)
    except Exception as exc:
        raise UserError(f"cannot read the study storage {describe_url(url)}: {_first_line(exc)}") from None
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise UserError(f"no study named {name!r} in {describe_url(url) or 'the storage'} (studies there: {known})")
    return optuna.load_study(study_name=name, storage=storage)


def artifact_dir(url: str, configured: str | None, root: str | Path) -> Path:
    """The artifact folder: `configured`, else ``<stem>_artifacts/`` beside a storage file, else
    ``<root>/artifacts`` (workers of a database server must share that folder, e.g. over NFS)."""
    if configured:
        return Path(configured)
    path = storage_file(url)
    if path is not None:
        return path.parent / f"{path.stem}_artifacts"
    return Path(root) / "artifacts"


def safe_artifact_name(name: str) -> str:
    """`name` if it is a plain file name (letters, digits, '.', '_', '-'; no folders, no leading dot), else a
    UserError: artifact names come from a shared storage and must never steer a write outside its folder."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in (".", ".."):
        raise UserError(f"refusing artifact name {name!r}: expected a plain file name (letters, digits, . _ -)")
    return name


class AtomicArtifactStore:
    """:class:`optuna.artifacts.FileSystemArtifactStore` whose writes are atomic (temp file, fsync, rename):
    a worker killed mid-upload never leaves a truncated artifact. Creates its folder first."""

    def __init__(self, base_path: str | Path):
        from optuna.artifacts import FileSystemArtifactStore

        self.base_path = Path(base_path)
        try:
            self.base_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the artifact folder {self.base_path}: {exc.strerror or exc}") from None
        self._store = FileSystemArtifactStore(self.base_path)

    def open_reader(self, artifact_id: str) -> IO[bytes]:
        return self._store.open_reader(_artifact_id(artifact_id))

    def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
        target = self._store._get_filepath(_artifact_id(artifact_id))
        atomic_write_stream(target, content_body)

    def remove(self, artifact_id: str) -> None:
        self._store.remove(_artifact_id(artifact_id))


def _artifact_id(artifact_id: str) -> str:
    """`artifact_id` if it is a plain name (Optuna's ids are UUIDs), else a UserError: an id read from a shared
    storage or a dashboard URL must never reach a file outside the store (``..``, ``/``, ``.``, empty)."""
    if not isinstance(artifact_id, str) or not _SAFE_NAME.match(artifact_id):
        raise UserError(f"refusing artifact id {artifact_id!r}: expected a plain name such as Optuna's UUIDs")
    return artifact_id

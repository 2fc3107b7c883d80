"""Several `nas study run` workers on one storage — SQLite, a journal file, a real PostgreSQL server — finish
every trial exactly once: no trial lost, none run twice, each in its own folder with its own artifacts."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import optuna
import pytest

pytestmark = pytest.mark.slow

PER_WORKER = 2
WORKERS = 2
# The cheapest meaningful trial: no latency term (no table), no KD (no teacher); the search and retrain still run.
SPACE = "latency_target_ms: 0.0\nkd: none\n"


def _run_workers(tmp: Path, url: str, tiny_config, name: str) -> list[subprocess.CompletedProcess]:
    cfg = tiny_config(tmp / "tiny.yaml", tmp / "studies")
    space = tmp / "space.yaml"
    space.write_text(SPACE)
    procs = [
        subprocess.Popen([sys.executable, "-m", "nas", "study", "run", "--study", name, "--storage", url,
                          "--n-trials", str(PER_WORKER), "--config", str(cfg), "--space", str(space),
                          "--worker", str(k)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(WORKERS)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def _check_all_trials_once(storage: object, name: str, study_root: Path) -> None:
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials()
    total = PER_WORKER * WORKERS
    assert [t.number for t in trials] == list(range(total))
    assert all(t.state.name == "COMPLETE" for t in trials), [t.state.name for t in trials]
    assert len({t.user_attrs["run_dir"] for t in trials}) == total
    assert len({t.user_attrs["seed"] for t in trials}) == total
    artifact_ids = [i for t in trials for i in t.user_attrs["artifacts"].values()]
    assert len(artifact_ids) == len(set(artifact_ids)) == 5 * total
    folders = sorted(p.name for p in (study_root / name).glob("trial_*"))
    assert folders == sorted(f"trial_{n}" for n in range(total))
    for n in range(total):
        assert (study_root / name / f"trial_{n}" / "student" / "model.pt").is_file()


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_share_a_local_storage(tmp_path, tiny_config, kind):
    root = tmp_path / "studies"
    url = f"sqlite:///{root / 'studies.db'}" if kind == "sqlite" else f"journal:{root / 'studies.log'}"
    results = _run_workers(tmp_path, url, tiny_config, f"w_{kind}")
    for res in results:
        assert res.returncode == 0, res.stderr[-3000:]
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage = JournalStorage(JournalFileBackend(str(root / "studies.log")))
    else:
        storage = url
    _check_all_trials_once(storage, f"w_{kind}", root)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb and the server refuse to run as root: run them as `nobody` then (runuser, else su)."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--", *cmd]
    import shlex

    return ["su", "nobody", "-s", "/bin/sh", "-c", shlex.join(cmd)]


@pytest.fixture
def postgres(free_port):
    """A throw-away PostgreSQL cluster on a free loopback port with an empty database `nas`; stopped after."""
    initdb, pg_ctl, createdb = _pg_bin("initdb"), _pg_bin("pg_ctl"), _pg_bin("createdb")
    if not (initdb and pg_ctl and createdb):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, createdb) are not installed; "
                    "on Debian: apt-get install -y postgresql")
    pytest.importorskip("psycopg2")
    base = Path(tempfile.mkdtemp(prefix="nas-pg-"))  # not under pytest's 0700 tmp: the server user must enter it
    data, sock = base / "data", base / "sock"
    data.mkdir()
    sock.mkdir()
    os.chmod(base, 0o755)
    if os.geteuid() == 0:
        shutil.chown(data, "nobody")
        shutil.chown(sock, "nobody")
    subprocess.run(_as_postgres_user([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                                      "--no-sync"]), check=True, capture_output=True, timeout=120)
    opts = f"-p {free_port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_postgres_user([pg_ctl, "-D", str(data), "-l", str(data / "server.log"), "-w", "-t", "60",
                                      "-o", opts, "start"]), check=True, capture_output=True, timeout=120)
    try:
        subprocess.run([createdb, "-h", "127.0.0.1", "-p", str(free_port), "-U", "postgres", "nas"], check=True,
                       capture_output=True, timeout=60)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{free_port}/nas"
    finally:
        subprocess.run(_as_postgres_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True,
                       timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_share_a_postgresql_server(tmp_path, tiny_config, nas_cli, postgres):
    root = tmp_path / "studies"
    results = _run_workers(tmp_path, postgres, tiny_config, "w_pg")
    for res in results:
        assert res.returncode == 0, res.stderr[-3000:]
    _check_all_trials_once(postgres, "w_pg", root)
    assert (root / "artifacts").is_dir()  # a server has no file to sit beside: <study.root>/artifacts
    listing = nas_cli("study", "list", "--storage", postgres)
    assert listing.returncode == 0 and listing.stdout.splitlines()[1].split()[:3] == ["w_pg", "4", "4"]


def test_workers_take_turns_creating_the_tables_on_a_server(postgres):
    """Workers starting together on a fresh database once raced to create Optuna's tables (`relation
    "alembic_version" already exists`, seen in CI): opening the storage now waits for the server's schema lock."""
    import psycopg2

    from nas.studies.storage import SCHEMA_LOCK_KEY, open_storage

    holder = psycopg2.connect(postgres.replace("postgresql+psycopg2://", "postgresql://"))
    holder.autocommit = True
    cur = holder.cursor()
    cur.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
    opened = threading.Event()
    worker = threading.Thread(target=lambda: (open_storage(postgres, create=True), opened.set()), daemon=True)
    worker.start()
    try:
        assert not opened.wait(3.0)  # another worker holds the lock: this one waits
    finally:
        cur.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
    assert opened.wait(60)
    worker.join(10)
    cur.execute("SELECT count(*) FROM alembic_version")
    assert cur.fetchone()[0] == 1
    holder.close()

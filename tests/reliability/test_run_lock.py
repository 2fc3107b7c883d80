"""One job per run folder: a live holder's lock refuses a second job in one line (exit 2, nothing written), a
dead holder's lock is taken over, the same process may nest, and a refused job leaves no empty folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nas.cli import main
from nas.errors import UserError
from nas.lock import LOCK_NAME, RunLock, lock_holder


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _hold(folder, pid: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "job": "nas search",
                                                "started": "2026-12-04T10:00:00"}))


def test_nested_locks_of_one_process_and_release(tmp_path):
    folder = tmp_path / "runs" / "a"
    with RunLock(folder):
        assert lock_holder(folder)["pid"] == os.getpid()
        with RunLock(folder):
            pass
        assert (folder / LOCK_NAME).is_file()
    assert not folder.exists() and not (tmp_path / "runs").exists()  # created by the lock, left empty: removed


def test_live_holder_refuses_and_dead_holder_is_taken_over(tmp_path, live_pid):
    folder = tmp_path / "run"
    _hold(folder, live_pid)
    with pytest.raises(UserError, match=f"in use by a nas search \\(pid {live_pid}"):
        RunLock(folder).__enter__()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _hold(folder, int(dead.stdout))
    with RunLock(folder, "nas train"):
        assert json.loads((folder / LOCK_NAME).read_text())["job"] == "nas train"
    assert not (folder / LOCK_NAME).exists()


@pytest.mark.parametrize("command", [["search"], ["train", "--model", "teacher"]])
def test_cli_job_on_a_locked_run_folder_is_one_line_exit_2(command, tmp_path, live_pid, capsys):
    folder = tmp_path / "runs" / "busy"
    _hold(folder, live_pid)
    code = main([*command, "--set", f"run.root={tmp_path / 'runs'}", "--name", "busy",
                 "--set", f"data.root={tmp_path / 'data'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is in use by a nas search" in err
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing written
    assert not (tmp_path / "data").exists()  # nor any dataset generated


@pytest.mark.parametrize("override,message", [
    ("run.threads=-1", "run.threads"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.workers=-2", "data.workers"),
])
def test_bad_values_are_refused_before_any_data_is_generated(override, message, tmp_path, capsys):
    code = main(["search", "--set", override, "--set", f"data.root={tmp_path / 'data'}",
                 "--set", f"run.root={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()

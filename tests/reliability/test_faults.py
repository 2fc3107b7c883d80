"""Faults: SIGKILL at seeded random points of a search, a retrain and a study, then resume; a full disk on a
checkpoint write. Afterwards no file is corrupt or half-written, at most the epoch (or trial) in progress is
lost, and the resumed result equals the uninterrupted run (CPU runs are deterministic)."""

from __future__ import annotations

import errno
import io
import os
import random
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

import nas.io
from nas.errors import UserError, WriteError
from nas.io import MetricsLog, atomic_write_json, load_checkpoint, read_json, save_checkpoint
from nas.models import save_model
from nas.studies.storage import AtomicArtifactStore
from search_spaces.arch import load_architecture, save_architecture

pytestmark = pytest.mark.slow

SEARCH = ("--set", "search.epochs=3")  # 1 warm-up + 3 search epochs
TRAIN_EPOCHS = "5"


def _spawn(log: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nas", "-q", *args], stdout=subprocess.DEVNULL,
                            stderr=log.open("w"), **kwargs)


def _rows(metrics: Path) -> int:
    """Finished epochs a job has logged (its metrics CSV is replaced atomically, so a read is never torn)."""
    return max(0, len(metrics.read_text().splitlines()) - 1) if metrics.is_file() else 0


def _kill_after(proc: subprocess.Popen, ready: Callable[[], bool], delay_s: float, timeout: float = 300) -> None:
    """SIGKILL `proc` `delay_s` seconds after `ready()` turns true; the process must still be running then."""
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert ready(), "the job never reached the kill point"
    time.sleep(delay_s)
    assert proc.poll() is None, "the job finished before the kill: the kill point says nothing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _checkpoint_epoch(ckpt: Path) -> int:
    """The last epoch the checkpoint holds; -1 when the kill cut the first checkpoint's write."""
    return load_checkpoint(ckpt)["epoch"] if ckpt.is_file() else -1


def _resume(ckpt: Path) -> tuple[str, ...]:
    """`--resume` when there is a checkpoint; without one the job simply starts again (it is allowed to)."""
    return ("--resume",) if ckpt.is_file() else ()


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _metrics(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=["seconds"])


@pytest.fixture(scope="module")
def runs(work) -> Path:
    return work.root / "faults"


# --------------------------------------------------------------------------- search


@pytest.fixture(scope="module")
def search_ref(work, runs, nas_cli) -> Path:
    res = nas_cli("-q", "search", *work.sets(runs, "search_ref"), *SEARCH)
    assert res.returncode == 0, res.stderr[-3000:]
    return runs / "search_ref"


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_during_search_then_resume_equals_the_uninterrupted_run(seed, work, runs, search_ref, nas_cli,
                                                                       intact):
    name = f"search_kill{seed}"
    run = runs / name
    proc = _spawn(runs / f"{name}.log", "search", *work.sets(runs, name), *SEARCH)
    # a seeded point within epoch 1 or 2 of 0..3: mid-step, mid-evaluation or mid-checkpoint-write
    epochs = 1 + seed
    _kill_after(proc, lambda: _rows(run / "metrics.csv") >= epochs, random.Random(seed).uniform(0.0, 0.6))
    print(f"seed {seed}: killed after {_rows(run / 'metrics.csv')} logged epochs, "
          f"{len(list(run.glob('.*.tmp')))} cut write(s)")
    intact(run, killed=True)
    done = _checkpoint_epoch(run / "search.ckpt")
    rows = len(pd.read_csv(run / "metrics.csv"))
    assert done + 1 <= rows <= done + 2  # the metrics row of the epoch whose checkpoint was cut, at most
    res = nas_cli("-q", "search", *_resume(run / "search.ckpt"), *work.sets(runs, name), *SEARCH)
    assert res.returncode == 0, res.stderr[-3000:]
    intact(run)
    ref = load_checkpoint(search_ref / "search.ckpt")
    got = load_checkpoint(run / "search.ckpt")
    assert got["epoch"] == ref["epoch"] == 3
    _same_tensors(ref["supernet"], got["supernet"])
    pd.testing.assert_frame_equal(_metrics(search_ref / "metrics.csv"), _metrics(run / "metrics.csv"))
    for kind in ("student", "teacher"):
        a = load_architecture(search_ref / f"{kind}.arch.json").to_dict()
        b = load_architecture(run / f"{kind}.arch.json").to_dict()
        assert a["branches"] == b["branches"], kind


# --------------------------------------------------------------------------- retraining


def _train_args(work, runs: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--arch", str(work.arch0), "--epochs", TRAIN_EPOCHS, *work.sets(runs, name), *extra]


@pytest.fixture(scope="module")
def train_ref(work, runs, nas_cli) -> Path:
    res = nas_cli("-q", *_train_args(work, runs, "train_ref"))
    assert res.returncode == 0, res.stderr[-3000:]
    return runs / "train_ref" / "student"


def _same_training(ref: Path, run: Path) -> None:
    _same_tensors(load_checkpoint(ref / "model.pt")["state_dict"], load_checkpoint(run / "model.pt")["state_dict"])
    _same_tensors(load_checkpoint(ref / "train.ckpt")["model"], load_checkpoint(run / "train.ckpt")["model"])
    pd.testing.assert_frame_equal(_metrics(ref / "metrics.csv"), _metrics(run / "metrics.csv"))
    assert read_json(ref / "scores.json")["miou"] == read_json(run / "scores.json")["miou"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_during_training_then_resume_equals_the_uninterrupted_run(seed, work, runs, train_ref, nas_cli,
                                                                         intact):
    name = f"train_kill{seed}"
    run = runs / name / "student"
    proc = _spawn(runs / f"{name}.log", *_train_args(work, runs, name))
    epochs = 1 + seed  # of 0..4, then a seeded delay: mid-step, mid-evaluation or mid-checkpoint-write
    _kill_after(proc, lambda: _rows(run / "metrics.csv") >= epochs, random.Random(seed).uniform(0.0, 0.1))
    print(f"seed {seed}: killed after {_rows(run / 'metrics.csv')} logged epochs, "
          f"{len(list(run.glob('.*.tmp')))} cut write(s)")
    intact(run, killed=True)
    assert not (run / "model.pt").exists()
    done = _checkpoint_epoch(run / "train.ckpt")
    assert done + 1 <= len(pd.read_csv(run / "metrics.csv")) <= done + 2
    res = nas_cli("-q", *_train_args(work, runs, name, *_resume(run / "train.ckpt")))
    assert res.returncode == 0, res.stderr[-3000:]
    intact(run)
    _same_training(train_ref, run)


def test_a_full_disk_on_a_checkpoint_write_keeps_the_previous_one(work, runs, train_ref, nas_cli, refused, intact):
    """A real failed write: the resumed job runs under a file-size limit (RLIMIT_FSIZE) below the checkpoint's size,
    so the kernel refuses the checkpoint write half-way (EFBIG), as a full disk would (ENOSPC)."""
    name = "train_full_disk"
    run = runs / name / "student"
    ckpt = run / "train.ckpt"
    proc = _spawn(runs / f"{name}.log", *_train_args(work, runs, name))
    _kill_after(proc, ckpt.is_file, 0.0)  # a run with a checkpoint to keep and epochs left to do
    before = ckpt.read_bytes()
    limit = len(before) // 2

    def small_files_only() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    resume = _train_args(work, runs, name, "--resume")
    res = nas_cli("-q", *resume, preexec_fn=small_files_only)
    line = refused(res, f"cannot write {ckpt}: File too large")
    assert "previous version" in line
    assert ckpt.read_bytes() == before  # the epoch-0 checkpoint, byte for byte
    intact(run)
    assert not (run / "model.pt").exists()
    res = nas_cli("-q", *resume)  # space again: the job continues from the kept checkpoint
    assert res.returncode == 0, res.stderr[-3000:]
    _same_training(train_ref, run)


# --------------------------------------------------------------------------- a study

STUDY_SPACE = "latency_target_ms: 0.0\nkd: none\n"  # no table, no teacher: the other parameters are sampled
STUDY_SETS = ("--set", "search.epochs=2", "--set", "train.epochs=5", "--set", "study.heartbeat_s=1",
              "--set", "study.grace_s=3")


def _study_args(work, root: Path, study: str) -> list[str]:
    space = work.root / "fault_space.yaml"
    space.write_text(STUDY_SPACE)
    return ["study", "run", "--study", study, "--storage", f"sqlite:///{root / 'studies.db'}", "--config",
            str(work.config), "--space", str(space), "--set", f"study.root={root}", *STUDY_SETS]


@pytest.fixture(scope="module")
def study_ref(work, runs, nas_cli) -> optuna.trial.FrozenTrial:
    root = runs / "study_ref"
    res = nas_cli("-q", *_study_args(work, root, "ref"), "--n-trials", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = optuna.load_study(study_name="ref", storage=f"sqlite:///{root / 'studies.db'}").get_trials()
    assert trial.state.name == "COMPLETE"
    return trial


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_during_a_study_trial_loses_no_trial(seed, work, runs, study_ref, nas_cli, intact):
    """Killed mid-search (seed 0) or mid-retrain (seed 1); the next worker fails the silent trial after the grace
    period and retries it with its parameters, seed and folder, resuming its checkpoints: its result is the
    uninterrupted trial's."""
    root = runs / f"study_kill{seed}"
    args = _study_args(work, root, "crash")
    milestone = ("search.ckpt", "student/train.ckpt")[seed % 2]
    proc = _spawn(runs / f"study_kill{seed}.log", *args, "--n-trials", "1")
    _kill_after(proc, (root / "crash" / "trial_0" / milestone).exists, random.Random(seed).uniform(0.0, 0.2))
    url = f"sqlite:///{root / 'studies.db'}"
    (running,) = optuna.load_study(study_name="crash", storage=url).get_trials()
    assert running.state.name == "RUNNING"
    intact(root, killed=True)
    time.sleep(4)  # past study.grace_s
    res = nas_cli("-q", *args, "--n-trials", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    intact(root)
    first, retry = optuna.load_study(study_name="crash", storage=url).get_trials()
    assert first.state.name == "FAIL" and retry.state.name == "COMPLETE"  # lost: none (the killed one is redone)
    assert retry.params == first.params == study_ref.params
    assert retry.user_attrs["seed"] == study_ref.user_attrs["seed"]
    assert retry.values[0] == study_ref.values[0]  # val mIoU; latency is a fresh measurement
    model = root / "crash" / "trial_0" / "student" / "model.pt"
    ref_model = runs / "study_ref" / "ref" / "trial_0" / "student" / "model.pt"
    _same_tensors(load_checkpoint(ref_model)["state_dict"], load_checkpoint(model)["state_dict"])


# --------------------------------------------------------------------------- a full disk, in process


class _Filling:
    """A file that takes `room` more bytes, then fails with ENOSPC: the disk fills up mid-write."""

    def __init__(self, fh, room: int):
        self.fh, self.room = fh, room

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.fh.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def fileno(self) -> int:
        return self.fh.fileno()


class _FullDisk:
    """`os.fdopen` whose files have room for `room` bytes."""

    def __init__(self, room: int):
        self.room, self.real = room, os.fdopen

    def __call__(self, fd, *args, **kwargs) -> _Filling:
        return _Filling(self.real(fd, *args, **kwargs), self.room)


def _fail(what: str):
    """A fault of the atomic writer: the disk fills mid-write, fsync fails, or the rename fails."""
    if what == "full-mid-write":
        return "fdopen", _FullDisk(room=10)
    err = {"fsync": errno.EIO, "rename": errno.EROFS, "no-temp-file": errno.ENOSPC}[what]

    def boom(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    return {"fsync": "fsync", "rename": "replace", "no-temp-file": "open"}[what], boom


def _writers(tmp: Path):
    """name → (write the file with `version`, the path written): every atomic writer of the package."""
    import numpy as np

    from search_spaces.builder import build_network
    from search_spaces.random_arch import random_architecture
    from search_spaces.registry import space_spec

    arch = random_architecture(space_spec("tiny", num_classes=11), np.random.default_rng(0))
    store = AtomicArtifactStore(tmp / "artifacts")
    net = build_network(arch)
    return {
        "checkpoint": (lambda v: save_checkpoint(tmp / "c.ckpt", {"epoch": v, "w": torch.full((1000,), float(v))}),
                       tmp / "c.ckpt"),
        "json": (lambda v: atomic_write_json(tmp / "s.json", {"v": v, "pad": "x" * 100}), tmp / "s.json"),
        "metrics": (lambda v: MetricsLog(tmp / "m.csv").append({"epoch": v, "loss": 1.0 / (v + 1)}), tmp / "m.csv"),
        "architecture": (lambda v: save_architecture(arch.with_meta(v=v), tmp / "a.arch.json"), tmp / "a.arch.json"),
        "model": (lambda v: save_model(tmp / "model.pt", net, "segnet", 11, arch=arch.to_dict(), meta={"v": v}),
                  tmp / "model.pt"),
        "artifact": (lambda v: store.write("0b4c2d1e-artifact", io.BytesIO(f"version {v} ".encode() * 50)),
                     tmp / "artifacts" / "0b4c2d1e-artifact"),
    }


WRITERS = ("checkpoint", "json", "metrics", "architecture", "model", "artifact")
FAULTS = ("full-mid-write", "fsync", "rename", "no-temp-file")


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("writer", WRITERS)
def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path, writer, fault, monkeypatch):
    write, path = _writers(tmp_path)[writer]
    write(0)
    before = path.read_bytes()
    name, fake = _fail(fault)
    if name == "open":  # mkstemp cannot even create the temp file
        monkeypatch.setattr(nas.io.tempfile, "mkstemp", fake)
    else:
        monkeypatch.setattr(nas.io.os, name, fake)
    with pytest.raises(WriteError) as exc:
        write(1)
    monkeypatch.undo()
    assert isinstance(exc.value, OSError) and isinstance(exc.value, UserError)
    assert exc.value.errno is not None and str(path) in str(exc.value) and "\n" not in str(exc.value)
    assert path.read_bytes() == before
    assert not list(path.parent.glob(".*.tmp"))
    write(2)  # the disk has room again: the next write goes through
    assert path.read_bytes() != before

"""Shared pieces of the reliability tests: tiny inputs (config, two architectures, one short training run) and
the checks every refusal and every fault must pass (one-line error, exit code 2, nothing left behind, every file
readable)."""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.io import load_checkpoint, read_json
from search_spaces.arch import load_architecture, save_architecture
from search_spaces.random_arch import random_architecture
from search_spaces.registry import space_spec

K = 11  # digit-scenes classes
_LOG_RECORD = re.compile(r"^\d\d:\d\d:\d\d (WARNING|ERROR) nas[.\w]*: ")  # the CLI's console format


@dataclass(frozen=True)
class Work:
    """Inputs shared by the reliability tests (built once per session)."""

    root: Path
    config: Path  # the tiny config (tests/conftest.py), data cache shared with the other tests
    arch0: Path  # two different valid tiny-space students
    arch1: Path

    def sets(self, run_root: Path, name: str = "r") -> list[str]:
        """`--config` and `--set` flags that send a job's outputs to `run_root/name`."""
        return ["--config", str(self.config), "--set", f"run.root={run_root}", "--name", name]


@pytest.fixture(scope="session")
def work(tmp_path_factory, tiny_config) -> Work:
    root = tmp_path_factory.mktemp("reliability")
    archs = []
    for seed in (0, 1):
        arch = random_architecture(space_spec("tiny", num_classes=K), np.random.default_rng(seed))
        archs.append(save_architecture(arch, root / f"arch{seed}.json"))
    return Work(root, tiny_config(root / "tiny.yaml", root / "studies"), *archs)


@pytest.fixture(scope="session")
def trained(work) -> Path:
    """A finished one-epoch retrain of arch0: the folder `student/` with train.ckpt, model.pt, config.yaml, ..."""
    from nas.config import load_config
    from nas.trainer import run_train

    cfg = load_config(work.config, [f"run.root={work.root / 'runs'}", "run.name=trained", "train.iters_per_epoch=1"])
    return run_train(cfg, work.arch0).run_dir.path


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with the SHA-256 of its bytes: two equal snapshots mean nothing was written."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_refused(res: subprocess.CompletedProcess, fragment: str, only_line: bool = True) -> str:
    """Exit code 2 and one stderr line, `nas <command>: error: ...` naming the problem; no traceback. A job that
    stops mid-run (`only_line=False`) may have logged warnings before it (with `-q`, nothing else)."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    if only_line:
        assert len(lines) == 1, res.stderr[-3000:]
    else:
        assert all(_LOG_RECORD.match(line) for line in lines[:-1]), res.stderr[-3000:]
    assert lines[-1].startswith("nas ") and ": error: " in lines[-1], lines[-1]
    assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def _assert_intact(run: Path, killed: bool = False) -> None:
    """Every checkpoint, JSON, architecture and CSV under `run` reads, and no temp file is left behind; right
    after a SIGKILL (`killed`), the temp file of a write it cut may remain (the next run of the job removes it)."""
    temps = list(run.rglob(".*.tmp"))
    assert len(temps) <= (1 if killed else 0), f"temporary files left behind: {temps}"
    for p in run.rglob("*"):
        if p in temps:
            continue
        if p.suffix in (".ckpt", ".pt"):
            assert isinstance(load_checkpoint(p), dict), p
        elif p.name.endswith(".arch.json"):
            load_architecture(p)
        elif p.suffix == ".json":
            read_json(p)
        elif p.suffix == ".csv" and p.stat().st_size:
            pd.read_csv(p)


@pytest.fixture(scope="session")
def refused() -> Callable[..., str]:
    """`refused(result, fragment, only_line=True)`: the exit-2 one-line error check above; returns the line."""
    return _assert_refused


@pytest.fixture(scope="session")
def snapshot() -> Callable[[Path], dict[str, str]]:
    """`snapshot(folder)`: file → SHA-256 of everything under it."""
    return _snapshot


@pytest.fixture(scope="session")
def intact() -> Callable[..., None]:
    """`intact(run_folder, killed=False)`: every file there readable, no temp file left (one, just after a kill)."""
    return _assert_intact

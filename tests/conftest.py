"""Test-wide settings and shared pieces: one torch thread (small tensors run faster without thread hand-offs, and
a shared 2-core machine stays responsive; subprocesses inherit the same through the environment), a config that
makes a search, a retrain or a study trial take seconds, the CLI as a subprocess, and a free port."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

HW = (64, 128)


def _tiny_config(path: Path, shared: Path, root: Path) -> Path:
    """Tiny space, 16 images, two iterations per phase, latency timed with one thread and two repeats."""
    path.write_text(f"""
run: {{threads: 1, log_every: 0, device: cpu}}
data: {{root: {shared / 'data'}, num_train: 16, num_val: 4, image_size: [{HW[0]}, {HW[1]}], batch_size: 4}}
space: {{name: tiny}}
latency: {{input_hw: [{HW[0]}, {HW[1]}], calibrate: 0, repeats: 2, warmup: 1, rounds: 1, threads: 1,
          cache_dir: {shared / 'tables'}}}
search: {{warmup_epochs: 1, epochs: 1, iters_per_epoch: 2, val_batches: 1}}
train: {{hrnet_preset: tiny, epochs: 1, iters_per_epoch: 2}}
export: {{real_images: 0, repeats: 2, warmup: 1, threads: 1}}
study: {{root: {root}}}
""")
    return path


def _cli(*args: str, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> Path:
    """Dataset cache and latency tables shared by every test that uses the tiny config (each is built once)."""
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="session")
def tiny_config(shared) -> Callable[[Path, Path], Path]:
    """`tiny_config(path, study_root)` writes the tiny config to `path` and returns it."""
    return lambda path, root: _tiny_config(path, shared, root)


@pytest.fixture(scope="session")
def nas_cli() -> Callable[..., subprocess.CompletedProcess]:
    """`nas_cli(*args, timeout=..., **subprocess_kwargs)`: run `python -m nas ARGS` and capture its output."""
    return _cli


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def folder_dataset(tmp_path):
    """A fabricated `data.name: folder` tree (tests/folder_fixture.py: 24 train + 8 val images of two sizes, 3
    classes, index / RGB / P-mode masks): a FolderTree with `.root`, `.labels`, `.overrides()`, `.set_flags()`,
    `.data_config()`. `make_folder_dataset(root, ...)` from that module builds other layouts."""
    from folder_fixture import make_folder_dataset

    return make_folder_dataset(tmp_path / "folder_data")

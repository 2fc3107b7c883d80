"""`nas data ...` through the real CLI: preview, generate/inspect, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _nas(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, timeout=180,
                          cwd=cwd)


def _small(tmp_path) -> list[str]:
    return ["--set", f"data.root={tmp_path / 'data'}", "--set", "data.num_train=16", "--set", "data.num_val=8",
            "--set", "data.image_size=[64,128]", "--set", f"run.root={tmp_path / 'runs'}"]


def test_preview_writes_a_png(tmp_path):
    out = tmp_path / "preview.png"
    res = _nas(tmp_path, "data", "preview", "--out", str(out), "--n", "4", *_small(tmp_path))
    assert res.returncode == 0, res.stderr
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert str(out) in res.stdout


def test_generate_then_inspect(tmp_path):
    res = _nas(tmp_path, "data", "generate", *_small(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "train: 16 images" in res.stdout and "val: 8 images" in res.stdout
    assert len(list((tmp_path / "data").glob("*.npz"))) == 2
    res = _nas(tmp_path, "data", "inspect", *_small(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "background" in res.stdout and "small" in res.stdout and "large" in res.stdout


def test_check_cityscapes_missing_root_is_one_line_exit_2(tmp_path):
    res = _nas(tmp_path, "data", "check-cityscapes", "/nonexistent")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "/nonexistent" in res.stderr and "Traceback" not in res.stderr


def test_bad_data_key_is_one_line_exit_2(tmp_path):
    res = _nas(tmp_path, "data", "preview", "--set", "data.foo=1", *_small(tmp_path))
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "data.foo" in res.stderr

"""Atomic writes, safe checkpoints and the metrics CSV."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from nas.config import ExperimentConfig, apply_overrides
from nas.errors import UserError
from nas.io import MetricsLog, RunDir, atomic_write_text, load_checkpoint, read_json, save_checkpoint


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temp file left


def test_checkpoint_round_trip_and_corruption(tmp_path):
    path = tmp_path / "ck.pt"
    state = {"model": {"w": torch.arange(4.0)}, "epoch": 3}
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(UserError, match="cannot be loaded"):
        load_checkpoint(path)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_checkpoint_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": pd.Timestamp("2020-01-01")}, path)  # an arbitrary class needs pickle to load
    with pytest.raises(UserError):
        load_checkpoint(path)


def test_read_json_errors(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"a": ')
    with pytest.raises(UserError, match="not valid JSON"):
        read_json(bad)


def test_metrics_log_grows_columns_and_truncates(tmp_path):
    log = MetricsLog(tmp_path / "m.csv")
    log.append({"epoch": 0, "loss": 1.5})
    log.append({"epoch": 1, "loss": 1.0, "miou": 0.25})
    frame = pd.read_csv(tmp_path / "m.csv")
    assert list(frame.columns) == ["epoch", "loss", "miou"]
    assert frame["loss"].tolist() == [1.5, 1.0]
    again = MetricsLog(tmp_path / "m.csv")
    again.truncate(1)
    assert len(pd.read_csv(tmp_path / "m.csv")) == 1


def test_run_dir_saves_resolved_config(tmp_path):
    cfg = apply_overrides(ExperimentConfig(), [f"run.root={tmp_path}", "run.name=r1", "data.batch_size=5"])
    run = RunDir.create(cfg)
    assert (tmp_path / "r1" / "config.yaml").is_file()
    assert "batch_size: 5" in (tmp_path / "r1" / "config.yaml").read_text()
    assert read_json(run.file("provenance.json"))["seed"] == 0


def test_run_dir_records_the_device_it_resolved(tmp_path):
    cfg = apply_overrides(ExperimentConfig(), [f"run.root={tmp_path}", "run.name=r2", "run.device=auto"])
    prov = read_json(RunDir.create(cfg).file("provenance.json"))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert prov["device"] == expected and prov["device_name"]
    assert ("cuda" in prov) == (expected == "cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_run_dir_on_a_missing_device_makes_nothing(tmp_path):
    cfg = apply_overrides(ExperimentConfig(), [f"run.root={tmp_path}", "run.name=r3", "run.device=cuda"])
    with pytest.raises(UserError, match="CUDA is not available"):
        RunDir.create(cfg)
    assert not (tmp_path / "r3").exists()


def test_run_logs_hold_their_own_run_and_what_runs_inside_it(tmp_path):
    """One process, several runs (a benchmark): a pipeline's log also gets its student's lines, but a finished
    sibling run's log gets nothing of the next run's."""
    import logging

    root = logging.getLogger()
    before = list(root.handlers)
    log = logging.getLogger("nas.test_io")
    try:
        first = RunDir.create(ExperimentConfig(), root=tmp_path, name="first")
        log.info("line of first")
        pipeline = RunDir.create(ExperimentConfig(), root=tmp_path, name="second")
        RunDir.create(ExperimentConfig(), root=tmp_path / "second", name="student")
        log.info("line of the student")
        for h in root.handlers:
            h.flush()
        assert (first.path / "log.txt").read_text().count("line of") == 1
        assert "line of the student" in (pipeline.path / "log.txt").read_text()
        assert "line of the student" in (tmp_path / "second" / "student" / "log.txt").read_text()
    finally:
        for h in [h for h in root.handlers if h not in before]:
            root.removeHandler(h)
            h.close()

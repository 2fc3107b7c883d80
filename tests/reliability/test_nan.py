"""A diverging run stops instead of training on garbage: a learning rate of 1e30 (a real trigger, through `--set`)
makes the loss NaN within two steps; the job exits with one line (exit code 2) saying so and what is kept, the
last good checkpoint is untouched and nothing is written as if the run had finished. Retrain, teacher training,
OKDDip and search each check their loss before it reaches the weights."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from nas.config import load_config
from nas.io import load_checkpoint

pytestmark = pytest.mark.slow


def _stop_after_first_checkpoint(monkeypatch, module) -> None:
    """Ctrl-C right after the first checkpoint (in process), leaving a run to resume."""
    real = module.save_checkpoint

    def save_then_stop(path, state):
        real(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "save_checkpoint", save_then_stop)


def test_retrain_diverging_after_a_good_epoch_keeps_that_epochs_checkpoint(work, tmp_path, nas_cli, refused,
                                                                          intact, monkeypatch):
    import nas.trainer.loop as loop
    from nas.trainer import run_train

    cfg = load_config(work.config, [f"run.root={tmp_path}", "run.name=r", "train.epochs=3"])
    _stop_after_first_checkpoint(monkeypatch, loop)
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, work.arch0)
    monkeypatch.undo()
    run = tmp_path / "r" / "student"
    good = (run / "train.ckpt").read_bytes()
    args = ["train", "--resume", "--arch", str(work.arch0), "--epochs", "3", *work.sets(tmp_path)]
    res = nas_cli("-q", *args, "--set", "train.lr=1e30")
    line = refused(res, "the training loss became nan at epoch 1", only_line=False)  # after a config warning
    assert f"the last good checkpoint is kept in {run / 'train.ckpt'}" in line
    assert (run / "train.ckpt").read_bytes() == good
    assert load_checkpoint(run / "train.ckpt")["epoch"] == 0
    assert len(pd.read_csv(run / "metrics.csv")) == 1  # no row of the diverged epoch
    assert not (run / "model.pt").exists() and not (run / "scores.json").exists()
    intact(run)
    res = nas_cli("-q", *args)  # with a sane learning rate, the run continues from the kept epoch
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run / "model.pt").is_file() and len(pd.read_csv(run / "metrics.csv")) == 3


@pytest.mark.parametrize(("role", "extra"), [
    ("teacher", ("--model", "teacher")),
    ("student", ("--arch", "ARCH", "--kd", "okddip", "--set", "distill.okddip_peers=2")),
])
def test_teacher_and_okddip_training_stop_on_nan(role, extra, work, tmp_path, nas_cli, refused):
    extra = tuple(str(work.arch0) if x == "ARCH" else x for x in extra)
    res = nas_cli("-q", "train", *extra, "--epochs", "2", *work.sets(tmp_path), "--set", "train.lr=1e30")
    line = refused(res, "the training loss became nan at epoch 0")
    run = tmp_path / "r" / role
    assert f"no epoch had finished, so {run} holds no checkpoint yet" in line
    assert not (run / "train.ckpt").exists() and not (run / "model.pt").exists()


def test_search_diverging_after_a_good_epoch_keeps_that_epochs_checkpoint(work, tmp_path, nas_cli, refused,
                                                                         intact, monkeypatch):
    import nas.searcher.loop as loop
    from nas.searcher import run_search

    _stop_after_first_checkpoint(monkeypatch, loop)
    with pytest.raises(KeyboardInterrupt):
        run_search(load_config(work.config, [f"run.root={tmp_path}", "run.name=r"]))
    monkeypatch.undo()
    run = Path(tmp_path / "r")
    good = (run / "search.ckpt").read_bytes()
    res = nas_cli("-q", "search", "--resume", *work.sets(tmp_path), "--set", "search.weight_lr=1e30")
    line = refused(res, "loss became nan at epoch 1: stopping", only_line=False)  # weight or architecture step
    assert f"the last good checkpoint is kept in {run / 'search.ckpt'}" in line
    assert (run / "search.ckpt").read_bytes() == good
    assert len(pd.read_csv(run / "metrics.csv")) == 1
    assert not (run / "arch_evolution.png").exists()  # the end-of-search outputs are not written
    intact(run)

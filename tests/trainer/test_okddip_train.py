"""`nas train --kd okddip`: teacher-free online distillation end to end, the deployable leader, exact resume and
the refusals."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch

import nas.trainer.loop as loop
from nas.config import load_config
from nas.errors import UserError
from nas.io import load_checkpoint
from nas.models import load_model
from nas.trainer import run_train
from search_spaces.arch import save_architecture
from search_spaces.builder import build_network
from search_spaces.random_arch import random_architecture
from search_spaces.registry import space_spec

K = 11  # digit scenes


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("okddip")
    arch = random_architecture(space_spec("tiny", num_classes=K), np.random.default_rng(0))
    save_architecture(arch, root / "arch.json")
    return root


def _overrides(work, name: str, *extra: str) -> list[str]:
    return [f"data.root={work / 'data'}", f"run.root={work / 'runs'}", f"run.name={name}", "run.device=cpu",
            "data.image_size=[64,128]", "data.num_train=16", "data.num_val=8", "data.batch_size=4",
            "train.iters_per_epoch=2", "train.epochs=2", "distill.okddip_peers=2", *extra]


def _cfg(work, name: str, *extra: str):
    return load_config(None, _overrides(work, name, *extra))


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _plain_params(work) -> int:
    from search_spaces.arch import load_architecture

    return sum(p.numel() for p in build_network(load_architecture(work / "arch.json"), aux_heads=False).parameters())


@pytest.mark.slow
def test_cli_okddip_without_teacher_writes_the_plain_student(work):
    sets = [x for o in _overrides(work, "cli") for x in ("--set", o)]
    res = subprocess.run([sys.executable, "-m", "nas", "train", "--arch", str(work / "arch.json"), "--kd", "okddip",
                          "--epochs", "1", *sets], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    run = work / "runs" / "cli" / "student"
    model, info = load_model(run / "model.pt")
    plain = _plain_params(work)
    assert sum(p.numel() for p in model.parameters()) == plain
    assert f"({plain / 1e6:.3f} M parameters)" in res.stdout
    assert info["meta"]["online"] == "okddip" and info["meta"]["kd"] == []
    assert not any(k.startswith(("peers.", "attention.", "leader.")) for k in model.state_dict())
    state = load_checkpoint(run / "train.ckpt")  # the peers train on: they are in the training checkpoint
    assert any(k.startswith("peers.1.") for k in state["model"]) and "attention.query.weight" in state["model"]
    row = _rows(run / "metrics.csv")[0]
    for col in ("loss_peers", "okd_l1", "okd_l2", "okd_weight"):
        assert np.isfinite(float(row[col])) and float(row[col]) > 0, col


def test_okddip_resume_repeats_the_uninterrupted_run(work, monkeypatch):
    straight = run_train(_cfg(work, "straight", "distill.online=okddip"), work / "arch.json")
    assert straight.params == _plain_params(work)

    real_save = loop.save_checkpoint

    def save_then_stop(path, state):
        real_save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)
    cfg = _cfg(work, "resumed", "distill.online=okddip")
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, work / "arch.json")
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = run_train(cfg, work / "arch.json", resume=True)

    ca = load_checkpoint(straight.run_dir.file("train.ckpt"))
    cb = load_checkpoint(resumed.run_dir.file("train.ckpt"))
    assert ca["model"].keys() == cb["model"].keys()
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])  # leader, peers, attention
    a = load_checkpoint(straight.model_path)["state_dict"]
    b = load_checkpoint(resumed.model_path)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = {"seconds"}
    rows_a = [{k: v for k, v in r.items() if k not in drop} for r in _rows(straight.run_dir.file("metrics.csv"))]
    rows_b = [{k: v for k, v in r.items() if k not in drop} for r in _rows(resumed.run_dir.file("metrics.csv"))]
    assert rows_a == rows_b and len(rows_a) == 2

    with pytest.raises(UserError, match="does not match this configuration"):  # a plain run cannot take it over
        run_train(_cfg(work, "resumed"), work / "arch.json", resume=True)


@pytest.mark.parametrize(("extra", "message"), [
    (("distill.losses=[okddip]",), "set distill.online=okddip"),
    (("distill.online=okddip", "distill.okddip_peers=1"), "at least 2"),
    (("distill.online=okddip", "distill.okddip_share=1.5"), r"in \[0, 1\]"),
    (("distill.online=okddip", "distill.okddip_temperature=0"), "positive"),
    (("distill.online=okddip", "distill.okddip_weight=-1"), "finite number >= 0"),
    (("distill.online=okddip", "distill.okddip_rampup_epochs=-2"), "cannot be negative"),
    (("distill.online=okddip", "train.model=teacher", "train.hrnet_preset=tiny"), "--model student"),
])
def test_refusals(work, extra, message):
    with pytest.raises(UserError, match=message) as exc:
        run_train(_cfg(work, "refused", *extra), work / "arch.json" if "train.model=teacher" not in extra else None)
    assert "\n" not in str(exc.value)
    assert not (work / "runs" / "refused").exists()

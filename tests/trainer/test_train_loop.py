"""The training job: student retrain, teacher, KD, the tutor chain, resume, divergence, refusals, the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import nas.trainer.loop as loop
from nas.config import load_config
from nas.errors import UserError
from nas.io import load_checkpoint
from nas.losses import OhemCrossEntropy
from nas.models import load_model, save_model
from nas.trainer import run_train
from search_spaces.arch import save_architecture
from search_spaces.hrnet import build_hrnet
from search_spaces.random_arch import random_architecture
from search_spaces.registry import space_spec

K = 11  # digit scenes


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    for seed in (0, 1):
        arch = random_architecture(space_spec("tiny", num_classes=K), np.random.default_rng(seed))
        save_architecture(arch, root / f"arch{seed}.json")
    return root


def _overrides(work, name: str, *extra: str) -> list[str]:
    return [f"data.root={work / 'data'}", f"run.root={work / 'runs'}", f"run.name={name}", "run.device=cpu",
            "data.image_size=[64,128]", "data.num_train=16", "data.num_val=8", "data.batch_size=4",
            "train.hrnet_preset=tiny", "train.iters_per_epoch=2", "train.epochs=2", *extra]


def _cfg(work, name: str, *extra: str):
    return load_config(None, _overrides(work, name, *extra))


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def teacher(work):
    result = run_train(_cfg(work, "teacher", "train.model=teacher"))
    return result.model_path


def test_student_retrain_without_kd(work):
    result = run_train(_cfg(work, "plain"), work / "arch0.json")
    run = result.run_dir.path
    assert run == work / "runs" / "plain" / "student"
    rows = _rows(run / "metrics.csv")
    assert [(r["phase"], r["epoch"]) for r in rows] == [("student", "0"), ("student", "1")]
    for col in ("loss_seg", "loss_aux", "lr", "seconds", "val_miou", "val_pixel_acc", "val_miou_small"):
        assert rows[-1][col] != "", col
    model, info = load_model(result.model_path)
    assert info["model_kind"] == "segnet" and info["num_classes"] == K
    assert not any(k.startswith("aux") for k in model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == result.params
    scores = json.loads(result.scores_path.read_text())
    assert set(scores["per_class"]) == set(result.class_names)
    assert scores["miou"] == pytest.approx(result.scores.miou)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 128))["logits"].shape == (1, K, 64, 128)


def test_teacher_then_student_with_pixel_and_pairwise_kd(work, teacher):
    model, info = load_model(teacher)
    assert info["model_kind"] == "hrnet" and info["hrnet"] == {"preset": "tiny"}
    result = run_train(_cfg(work, "kd", "distill.losses=[pixel,pairwise]", f"distill.teacher={teacher}"),
                       work / "arch0.json")
    rows = _rows(result.run_dir.file("metrics.csv"))
    assert len(rows) == 2
    for col in ("kd_pixel_logits", "kd_pairwise_feat8", "loss_kd"):
        assert np.isfinite(float(rows[0][col])) and float(rows[0][col]) > 0, col


def test_tutor_chain(work, teacher):
    cfg = _cfg(work, "tutor", "distill.tutor=tutor", "distill.tutor_path=4", "distill.tutor_epochs=1",
               "distill.losses=[pixel,feature]", f"distill.teacher={teacher}")
    result = run_train(cfg, work / "arch0.json")
    rows = _rows(result.run_dir.file("metrics.csv"))
    assert [(r["phase"], r["epoch"]) for r in rows] == [("tutor", "0"), ("student", "0"), ("student", "1")]
    state = load_checkpoint(result.run_dir.file("train.ckpt"))
    assert state["tutor_path"] == 4 and any(k.startswith("hr_path") for k in state["finished"]["tutor"])
    model, info = load_model(result.model_path)  # the deployable student: no tutor path, no aux heads
    assert info["meta"]["tutor_path"] == 4 and info["meta"]["role"] == "student"
    assert not any(k.startswith(("hr_", "main.")) for k in model.state_dict())


def _interrupt_after_saves(monkeypatch, cfg, arch_path, saves: int) -> None:
    """Run `cfg` until its `saves`-th checkpoint is written, then stop it as Ctrl-C would."""
    real_save, done = loop.save_checkpoint, []

    def save_then_stop(path, state):
        real_save(path, state)
        done.append(state["epoch"])
        if len(done) == saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, arch_path)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)


def test_resume_repeats_the_uninterrupted_run(work, teacher, monkeypatch):
    extra = ("distill.tutor=tutor", "distill.tutor_epochs=1", "distill.losses=[pixel,holistic]",
             f"distill.teacher={teacher}")
    straight = run_train(_cfg(work, "straight", *extra), work / "arch0.json")

    cfg = _cfg(work, "resumed", *extra)
    _interrupt_after_saves(monkeypatch, cfg, work / "arch0.json", 2)  # the tutor's epoch and the student's first
    assert not (work / "runs" / "resumed" / "student" / "model.pt").exists()
    resumed = run_train(cfg, work / "arch0.json", resume=True)

    a = load_checkpoint(straight.model_path)["state_dict"]
    b = load_checkpoint(resumed.model_path)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ca = load_checkpoint(straight.run_dir.file("train.ckpt"))
    cb = load_checkpoint(resumed.run_dir.file("train.ckpt"))
    assert all(torch.equal(ca["criterion"][k], cb["criterion"][k]) for k in ca["criterion"])  # discriminator
    drop = {"seconds"}
    rows_a = [{k: v for k, v in r.items() if k not in drop} for r in _rows(straight.run_dir.file("metrics.csv"))]
    rows_b = [{k: v for k, v in r.items() if k not in drop} for r in _rows(resumed.run_dir.file("metrics.csv"))]
    assert rows_a == rows_b and len(rows_a) == 3
    assert straight.scores.miou == resumed.scores.miou


def test_nan_loss_stops_and_keeps_the_last_checkpoint(work, monkeypatch):
    poisoned = {"on": False}
    real_eval, real_forward = loop.evaluate, OhemCrossEntropy.forward

    def eval_then_poison(*args, **kwargs):
        out = real_eval(*args, **kwargs)
        poisoned["on"] = True  # every loss after the first epoch's evaluation is NaN
        return out

    def forward(self, logits, label):
        value = real_forward(self, logits, label)
        return value * float("nan") if poisoned["on"] else value

    monkeypatch.setattr(loop, "evaluate", eval_then_poison)
    monkeypatch.setattr(OhemCrossEntropy, "forward", forward)
    with pytest.raises(UserError, match="loss became nan") as exc:
        run_train(_cfg(work, "nan"), work / "arch0.json")
    assert "\n" not in str(exc.value)
    run = work / "runs" / "nan" / "student"
    assert load_checkpoint(run / "train.ckpt")["epoch"] == 0
    assert len(_rows(run / "metrics.csv")) == 1
    assert not (run / "model.pt").exists()


def test_refusals(work, tmp_path):
    with pytest.raises(UserError, match="need a teacher"):
        run_train(_cfg(work, "r1", "distill.losses=[pixel]"), work / "arch0.json")
    with pytest.raises(UserError, match="unknown KD loss"):
        run_train(_cfg(work, "r1", "distill.losses=[nope]"), work / "arch0.json")
    wrong = tmp_path / "teacher5.pt"
    save_model(wrong, build_hrnet("tiny", 5), "hrnet", 5, hrnet={"preset": "tiny"})
    with pytest.raises(UserError, match="5 classes"):
        run_train(_cfg(work, "r1", "distill.losses=[pixel]", f"distill.teacher={wrong}"), work / "arch0.json")
    bad = tmp_path / "bad.arch.json"
    bad.write_text('{"schema_version": 1}')
    with pytest.raises(UserError, match="field"):
        run_train(_cfg(work, "r1"), bad)
    with pytest.raises(UserError, match="needs --arch"):
        run_train(_cfg(work, "r1"))
    run_train(_cfg(work, "r2", "train.epochs=2", "train.iters_per_epoch=1"), work / "arch0.json")
    with pytest.raises(UserError, match="already holds"):
        run_train(_cfg(work, "r2", "train.epochs=2", "train.iters_per_epoch=1"), work / "arch0.json")
    with pytest.raises(UserError, match="another architecture"):
        run_train(_cfg(work, "r2", "train.epochs=2", "train.iters_per_epoch=1"), work / "arch1.json", resume=True)
    with pytest.raises(UserError, match="nothing to resume"):
        run_train(_cfg(work, "r3"), work / "arch0.json", resume=True)


def _nas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", "train", *args], capture_output=True, text=True, timeout=120)


def _sets(work, name: str) -> list[str]:
    return [x for o in _overrides(work, name) for x in ("--set", o)]


@pytest.mark.slow
def test_cli_main_path(work):
    res = _nas("--arch", str(work / "arch0.json"), "--epochs", "1", *_sets(work, "cli"))
    assert res.returncode == 0, res.stderr
    assert "mIoU" in res.stdout and "model.pt" in res.stdout
    assert (work / "runs" / "cli" / "student" / "model.pt").is_file()
    assert len(_rows(work / "runs" / "cli" / "student" / "metrics.csv")) == 1


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (("--arch", "missing.arch.json"), "not found"),
    (("--arch", "ARCH", "--kd", "pixel,pairwise"), "need a teacher"),
])
def test_cli_bad_inputs_exit_2(work, args, message):
    args = tuple(str(work / "arch0.json") if a == "ARCH" else a for a in args)
    res = _nas(*args, *_sets(work, "clibad"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert message in lines[0] and "Traceback" not in res.stderr


def test_adamw_retrain_resumes_exactly_and_refuses_another_optimiser(work, monkeypatch):
    """`train.optimizer=adamw`: AdamW's moments travel in the checkpoint (the resumed run equals the straight one);
    resuming it as SGD is a one-line refusal, not a KeyError inside the optimiser."""
    extra = ("train.optimizer=adamw", "train.lr=2e-3", "train.ohem_thresh=1.0")
    straight = run_train(_cfg(work, "adam_straight", *extra), work / "arch0.json")
    cfg = _cfg(work, "adam_resumed", *extra)
    _interrupt_after_saves(monkeypatch, cfg, work / "arch0.json", 1)
    ckpt = load_checkpoint(work / "runs" / "adam_resumed" / "student" / "train.ckpt")
    assert ckpt["optimizer_kind"] == "adamw" and "exp_avg" in next(iter(ckpt["optimizer"]["state"].values()))
    with pytest.raises(UserError, match="train.optimizer=adamw, not sgd"):
        run_train(_cfg(work, "adam_resumed", "train.lr=2e-3", "train.ohem_thresh=1.0"), work / "arch0.json",
                  resume=True)
    resumed = run_train(cfg, work / "arch0.json", resume=True)
    a = load_checkpoint(straight.model_path)["state_dict"]
    b = load_checkpoint(resumed.model_path)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.scores.miou == resumed.scores.miou

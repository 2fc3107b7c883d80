"""`search.strategy=halving`: the rung schedule, and the search end to end (one student per target within its
window, resume after an interruption equal to an uninterrupted run, bad settings and unreachable targets refused
before any folder is written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nas
from nas.searcher import halving
from nas.searcher.evolution import target_file
from nas.searcher.halving import rung_plan


def test_rung_plan_halves_until_one_is_left():
    assert rung_plan(8, 100, 2) == [(8, 100), (4, 200), (2, 400)]
    assert rung_plan(12, 50, 3) == [(12, 50), (4, 150), (2, 450)]
    assert rung_plan(5, 10, 2) == [(5, 10), (3, 20), (2, 40)]
    assert rung_plan(2, 7, 4) == [(2, 7)]


def _sets(tmp: Path, name: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        f"run.root={tmp / 'runs'}", f"run.name={name}", f"data.root={tmp / 'data'}", "data.num_train=16",
        "data.num_val=4", "data.image_size=[64,128]", "data.batch_size=4", "space.name=tiny", "run.threads=1",
        "run.log_every=0", "latency.input_hw=[64,128]", "latency.calibrate=0", "latency.repeats=2",
        "latency.warmup=1", "latency.rounds=1", f"latency.cache_dir={tmp / 'tables'}", "search.strategy=halving",
        "search.halving_candidates=4", "search.halving_iters=2", "search.halving_score_batches=1",
        "search.evolution_window=0.6", *extra,
    ]


def _reachable_targets(tmp: Path) -> tuple[float, float]:
    """Two targets inside the tiny space's table range (the table is measured here, so it varies by machine)."""
    from nas.data import dataset_info
    from nas.latency.cache import open_table
    from search_spaces.random_arch import draw_within
    from search_spaces.registry import space_from_config

    cfg = nas.load_config(None, _sets(tmp, "probe", ("search.latency_target_ms=1",)))
    spec = space_from_config(cfg.space, dataset_info(cfg.data).num_classes)
    table = open_table(cfg.latency, spec, (cfg.space.student_stem_width, 1.0), (cfg.space.student_head_width, 1.0))
    drawn, _ = draw_within(spec, lambda a: table.predict_architecture(a, (1, 3, 64, 128)), lambda lat: True, 60, 0,
                           cfg.space.student_stem_width, cfg.space.student_head_width)
    lats = [lat for _, lat in drawn]
    return float(np.percentile(lats, 40)), float(np.percentile(lats, 80))


@pytest.mark.slow
def test_halving_cli_writes_one_student_per_target_within_its_window(tmp_path):
    t1, t2 = _reachable_targets(tmp_path)
    sets = _sets(tmp_path, "sh", (f"search.latency_target_ms={t1}", f"search.extra_targets_ms=[{t2}]"))
    res = subprocess.run([sys.executable, "-m", "nas", "search", *[x for s in sets for x in ("--set", s)]],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "runs" / "sh"
    for t in (t1, t2):
        arch = json.loads((run / target_file(t)).read_text())
        meta = arch["meta"]
        assert 0.6 * t <= meta["predicted_latency_ms"] <= t
        assert meta["strategy"] == "halving" and meta["latency_target_ms"] == pytest.approx(t)
        assert meta["halving_iters"] == 4 and meta["candidates"] == 4 and meta["halving_loss_b"] > 0
    assert (run / "student.arch.json").read_text() == (run / target_file(t1)).read_text()
    rungs = pd.read_csv(run / "metrics.csv")
    assert rungs[["candidates", "iters"]].values.tolist() == [[4, 2], [2, 4]] * 2  # two rungs per target
    assert (rungs["best_loss_b"] <= rungs["median_loss_b"]).all()
    assert not (run / halving.WEIGHTS).exists()  # the candidates' weights are removed once the search ends
    assert (run / "student_trellis.png").is_file() and not (run / "arch_evolution.png").exists()  # nothing to trace
    assert "table latency of the student" in res.stdout and "arch_evolution" not in res.stdout


@pytest.mark.slow
def test_halving_resumed_after_an_interruption_ends_as_an_uninterrupted_run(tmp_path, monkeypatch):
    t1, _ = _reachable_targets(tmp_path)
    target = (f"search.latency_target_ms={t1}",)
    whole = nas.search(None, _sets(tmp_path, "whole", target))
    calls = {"n": 0}
    train_to = halving.Halving.train_to

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # in the second rung, after its first candidate was saved
            raise KeyboardInterrupt
        return train_to(self, *args, **kwargs)

    monkeypatch.setattr(halving.Halving, "train_to", interrupted)
    with pytest.raises(KeyboardInterrupt):
        nas.search(None, _sets(tmp_path, "cut", target))
    monkeypatch.setattr(halving.Halving, "train_to", train_to)
    run = tmp_path / "runs" / "cut"
    assert (run / halving.WEIGHTS).is_dir() and not (run / "student.arch.json").exists()
    resumed = nas.search(None, _sets(tmp_path, "cut", target), resume=True)
    strip = lambda a: {k: v for k, v in a.to_dict().items() if k != "meta"}  # noqa: E731
    assert strip(resumed.student) == strip(whole.student)
    assert resumed.student.meta["halving_loss_b"] == pytest.approx(whole.student.meta["halving_loss_b"], rel=1e-6)
    assert pd.read_csv(run / "metrics.csv")["rung"].tolist() == [0, 1]


@pytest.mark.slow
def test_unreachable_target_is_refused_before_anything_is_written(tmp_path):
    sets = _sets(tmp_path, "far", ("search.latency_target_ms=0.0001",))
    res = subprocess.run([sys.executable, "-m", "nas", "search", *[x for s in sets for x in ("--set", s)]],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 2
    err = [line for line in res.stderr.strip().splitlines() if " INFO " not in line]  # the table is measured first
    assert len(err) == 1 and "search target 0.0001 ms" in err[0] and "choose a" in err[0], err
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs" / "far").exists()


@pytest.mark.parametrize("bad", ["search.halving_eta=1", "search.halving_candidates=1", "search.halving_iters=0",
                                 "search.latency_target_ms=0"])
def test_bad_halving_settings_are_refused_in_one_line(tmp_path, bad):
    sets = _sets(tmp_path, "bad", ("search.latency_target_ms=5", bad))
    res = subprocess.run([sys.executable, "-m", "nas", "search", *[x for s in sets for x in ("--set", s)]],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and bad.split("=")[0] in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists()

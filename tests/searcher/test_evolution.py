"""`search.strategy=evolution`: genome operators, the one-hot override, BatchNorm recalibration, and the search
end to end (one student per target within its window, resume equivalence, an unreachable target refused)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nas
from nas.searcher.evolution import (
    applied,
    crossover,
    genome_space,
    mutate,
    random_genome,
    recalibrate_bn,
    target_file,
)
from search_spaces.fasterseg import Supernet
from search_spaces.registry import space_spec


def _net() -> Supernet:
    return Supernet(space_spec("tiny", num_classes=5))


def test_genome_operators_stay_in_the_space_and_mix_parents():
    space = genome_space(_net())
    assert {"alpha.0", "beta.0", "gamma.0", "upsample"} <= set(space)
    rng = np.random.default_rng(0)
    a, b = random_genome(space, rng), random_genome(space, rng)
    for g in (a, b, mutate(a, space, rng, 0.3), crossover(a, b, rng)):
        for name, (rows, n) in space.items():
            assert len(g[name]) == rows and all(0 <= c < n for c in g[name])
    for _ in range(20):
        m = mutate(a, space, rng, 0.0)  # at least one row changes, even at probability 0
        assert sum(x != y for k in a for x, y in zip(a[k], m[k])) >= 1
        c = crossover(a, b, rng)
        assert all(x in (p, q) for k in a for x, p, q in zip(c[k], a[k], b[k]))


def test_applied_sets_the_argmax_and_restores_the_logits():
    net = _net()
    with torch.no_grad():
        for p in net.arch_parameters("student"):
            p.normal_()
    before = [p.detach().clone() for p in net.arch_parameters("student")]
    g = random_genome(genome_space(net), np.random.default_rng(1))
    with applied(net, g):
        params = dict(net.arch["student"].named_parameters())
        for name, choices in g.items():
            assert params[name].argmax(-1).tolist() == list(choices)
            assert torch.softmax(params[name], -1).max(-1).values.min() > 0.999
    for p, q in zip(net.arch_parameters("student"), before):
        assert torch.equal(p, q)


def test_recalibrate_bn_estimates_the_statistics_of_the_batches_seen():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    net = nn.Sequential(conv, nn.BatchNorm2d(4))
    net[1].running_mean.fill_(5.0)
    batches = [{"image": torch.randn(2, 3, 8, 8) + i} for i in range(3)]
    recalibrate_bn(net, net, batches, batches=2, device=torch.device("cpu"))
    with torch.no_grad():
        means = torch.stack([conv(b["image"]).mean((0, 2, 3)) for b in batches[:2]])
    assert torch.allclose(net[1].running_mean, means.mean(0), atol=1e-5)  # an average of the two, not momentum
    assert net[1].momentum == 0.1 and net.training


def _sets(tmp: Path, name: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        f"run.root={tmp / 'runs'}", f"run.name={name}", f"data.root={tmp / 'data'}", "data.num_train=16",
        "data.num_val=4", "data.image_size=[64,128]", "data.batch_size=4", "space.name=tiny", "run.threads=1",
        "search.warmup_epochs=1", "search.epochs=1", "search.iters_per_epoch=2", "run.log_every=0",
        "latency.input_hw=[64,128]", "latency.calibrate=0", "latency.repeats=2", "latency.warmup=1",
        "latency.rounds=1", f"latency.cache_dir={tmp / 'tables'}", "search.strategy=evolution",
        "search.evolution_population=4", "search.evolution_calib_batches=1", "search.evolution_score_batches=1",
        "search.evolution_window=0.6", *extra,
    ]


def _reachable_targets(tmp: Path) -> tuple[float, float]:
    """Two targets inside the tiny space's table range (the table is measured here, so it varies by machine)."""
    from nas.io import RunDir
    from nas.searcher.loop import SearchJob
    from search_spaces.derive import derive

    cfg = nas.load_config(None, _sets(tmp, "probe", ("search.latency_target_ms=1",)))
    job = SearchJob(cfg, RunDir(str(tmp / "probe")))
    space, rng, lats = genome_space(job.net), np.random.default_rng(0), []
    for _ in range(60):
        with applied(job.net, random_genome(space, rng)):
            lats.append(job.table.predict_architecture(derive(job.net, "student"), (1, 3, 64, 128)))
    return float(np.percentile(lats, 40)), float(np.percentile(lats, 80))


@pytest.mark.slow
def test_evolution_cli_writes_one_student_per_target_within_its_window(tmp_path):
    t1, t2 = _reachable_targets(tmp_path)
    sets = _sets(tmp_path, "evo", (f"search.latency_target_ms={t1}", f"search.extra_targets_ms=[{t2}]",
                                   "search.evolution_generations=1"))
    res = subprocess.run([sys.executable, "-m", "nas", "search", *[x for s in sets for x in ("--set", s)]],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "runs" / "evo"
    for t in (t1, t2):
        arch = json.loads((run / target_file(t)).read_text())
        assert 0.6 * t <= arch["meta"]["predicted_latency_ms"] <= t
        assert arch["meta"]["strategy"] == "evolution" and arch["meta"]["latency_target_ms"] == pytest.approx(t)
    assert (run / "student.arch.json").read_text() == (run / target_file(t1)).read_text()
    state = json.loads((run / "evolution.json").read_text())
    assert [len(state["targets"][f"{t:g}"]["history"]) for t in (t1, t2)] == [2, 2]  # random + 1 generation
    assert set(pd.read_csv(run / "metrics.csv")["phase"]) == {"supernet"}
    assert "table latency of the student" in res.stdout


@pytest.mark.slow
def test_evolution_resumed_after_a_generation_ends_as_an_uninterrupted_run(tmp_path):
    t1, _ = _reachable_targets(tmp_path)
    whole = nas.search(None, _sets(tmp_path, "whole", (f"search.latency_target_ms={t1}",
                                                        "search.evolution_generations=2")))
    nas.search(None, _sets(tmp_path, "cut", (f"search.latency_target_ms={t1}", "search.evolution_generations=1")))
    resumed = nas.search(None, _sets(tmp_path, "cut", (f"search.latency_target_ms={t1}",
                                                        "search.evolution_generations=2")), resume=True)
    strip = lambda a: {k: v for k, v in a.to_dict().items() if k != "meta"}  # noqa: E731
    assert strip(resumed.student) == strip(whole.student)
    assert resumed.student.meta["supernet_score_b"] == whole.student.meta["supernet_score_b"]
    hist = json.loads((tmp_path / "runs" / "cut" / "evolution.json").read_text())["targets"][f"{t1:g}"]["history"]
    assert [h["generation"] for h in hist] == [0, 1, 2]


@pytest.mark.slow
def test_unreachable_target_is_refused_before_training(tmp_path):
    sets = _sets(tmp_path, "far", ("search.latency_target_ms=0.0001",))
    res = subprocess.run([sys.executable, "-m", "nas", "search", *[x for s in sets for x in ("--set", s)]],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 2
    err = [line for line in res.stderr.strip().splitlines() if " INFO " not in line]  # the table is measured first
    assert len(err) == 1 and "search target 0.0001 ms" in err[0] and "choose a target" in err[0], err
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs" / "far").exists()

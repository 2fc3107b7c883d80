"""The NNI back-end (`--strategy nni-*`): the model space, frozen single paths, each strategy end to end, and the
latency term moving the architecture. Skipped only where the `nni` extra is not installed (CI installs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("nni")
pytest.importorskip("pytorch_lightning")

from nas.config import load_config  # noqa: E402
from nas.nni_backend import STRATEGIES, run_nni_search  # noqa: E402
from nas.nni_backend.convert import LabelLayout, architecture_from_choice  # noqa: E402
from nas.nni_backend.space import FasterSegModelSpace  # noqa: E402
from nas.trainer import run_train  # noqa: E402
from search_spaces.arch import load_architecture  # noqa: E402
from search_spaces.builder import build_network  # noqa: E402
from search_spaces.ops import SlimOperator  # noqa: E402
from search_spaces.registry import space_spec  # noqa: E402

K = 11  # digit scenes


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("nni")


def _sets(work, name: str, *extra: str) -> list[str]:
    return [
        f"run.root={work / 'runs'}", f"run.name={name}", f"data.root={work / 'data'}", "data.num_train=16",
        "data.num_val=4", "data.image_size=[64,128]", "data.batch_size=4", "space.name=tiny", "run.device=cpu",
        "search.warmup_epochs=1", "search.epochs=1", "search.iters_per_epoch=3", "search.val_batches=1",
        "run.log_every=0", "latency.input_hw=[64,128]", "latency.calibrate=0", "latency.repeats=2",
        "latency.warmup=1", "latency.rounds=1", f"latency.cache_dir={work / 'tables'}",
        "search.latency_target_ms=0.01", "search.latency_adapt=false", "search.nni_candidates=6", *extra,
    ]


def _space() -> FasterSegModelSpace:
    torch.manual_seed(0)
    return FasterSegModelSpace(space_spec("tiny", num_classes=K), 8 / 12, 8 / 12)


def test_space_labels_are_the_converter_layout():
    space = _space()
    layout = LabelLayout(space.spec, space.main_branches, "search")
    mutables = space.simplify()
    assert set(mutables) == set(layout.labels())
    for label, mutable in mutables.items():
        assert list(mutable.values) == layout.names(label), label


def test_frozen_model_runs_only_the_chosen_paths():
    space = _space()
    layout = LabelLayout(space.spec, space.main_branches, "search")
    sample = {lab: names[i % len(names)] for i, (lab, names) in
              enumerate((lab, layout.names(lab)) for lab in layout.labels())}
    frozen = space.freeze(sample)
    calls = []
    for m in frozen.modules():
        if isinstance(m, SlimOperator):
            m.register_forward_hook(lambda mod, inp, out: calls.append(mod))
    out = frozen(torch.randn(1, 3, 64, 128))
    assert out["logits"].shape == (1, K, 64, 128)
    # nodes reached from the last layer by the chosen inputs: one operator each, plus the S output operators
    L, S = space.L, space.S
    reached, todo = set(), [(L - 1, si) for si in range(S)]
    while todo:
        layer, si = todo.pop()
        if (layer, si) in reached or layer == 0:
            continue
        reached.add((layer, si))
        src = sample.get(f"path_{layer}_{si}", "keep" if si == 0 else "down")
        todo.append((layer - 1, si if src == "keep" else si - 1))
    assert len(calls) == len(reached) + S
    assert len(set(map(id, calls))) == len(calls)


def test_conversion_follows_the_exported_choice():
    space = _space()
    layout = LabelLayout(space.spec, space.main_branches, "search")
    sample = {lab: layout.names(lab)[-1] for lab in layout.labels()}  # always "down", widest, last op
    arch = architecture_from_choice(layout, sample, 8 / 12, 8 / 12, min_depth_rule=False)
    coarse = arch.branches[0]
    assert [c.scale for c in coarse.cells] == [8, 8, 8, 16, 32]  # always "down": as late as possible
    assert all(c.op == space.spec.ops[-1] for c in coarse.cells)
    assert coarse.upsample == ("pixel_shuffle", "pixel_shuffle") and arch.final_upsample == "pixel_shuffle"
    with pytest.raises(ValueError, match="lacks the choice"):
        architecture_from_choice(layout, {}, 8 / 12, 8 / 12)


def _final_latency(work, name: str) -> float:
    with open(work / "runs" / name / "metrics.csv") as fh:
        rows = fh.read().splitlines()
    head, last = rows[0].split(","), rows[-1].split(",")
    return float(last[head.index("expected_latency_ms")])


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_each_strategy_derives_a_buildable_trainable_architecture_and_the_latency_term_moves_it(work, strategy):
    fast = ("search.arch_lr=0.2",)
    with_term = run_nni_search(load_config(None, _sets(work, f"{strategy}-lat", f"search.strategy={strategy}",
                                                       "search.latency_weight=50", *fast)))
    without = run_nni_search(load_config(None, _sets(work, f"{strategy}-free", f"search.strategy={strategy}",
                                                     "search.latency_weight=0", *fast)))
    run = work / "runs" / f"{strategy}-lat"
    arch = load_architecture(run / "student.arch.json")
    assert arch == load_architecture(run / "student.arch.json") and arch.kind == "student"
    assert arch.meta["nni_strategy"] == STRATEGIES[strategy] and arch.meta["predicted_latency_ms"] > 0
    assert with_term.teacher is None and with_term.student.to_dict()["branches"] == arch.to_dict()["branches"]
    choice = json.loads((run / "nni_choice.json").read_text())
    assert choice["strategy"] == STRATEGIES[strategy] and choice["sample"]
    net = build_network(arch)
    out = net(torch.randn(2, 3, 64, 128))
    assert out["logits"].shape == (2, K, 64, 128)
    lat, free = _final_latency(work, f"{strategy}-lat"), _final_latency(work, f"{strategy}-free")
    if strategy == "nni-random":  # the term only ranks sampled candidates: it can pick the same one
        assert lat <= free
    else:
        assert lat < free, (lat, free)
    assert without.student.meta["nni_strategy"] == STRATEGIES[strategy]
    # the derived student trains unchanged
    train = run_train(load_config(None, [f"data.root={work / 'data'}", f"run.root={work / 'runs'}",
                                         f"run.name={strategy}-train", "run.device=cpu", "data.image_size=[64,128]",
                                         "data.num_train=16", "data.num_val=4", "data.batch_size=4",
                                         "train.epochs=1", "train.iters_per_epoch=1", "run.log_every=0"]),
                      arch_path=run / "student.arch.json")
    assert 0.0 <= train.scores.miou <= 1.0


@pytest.mark.slow
def test_cli_strategy_flag_writes_nothing_to_home(work, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    sets = [x for s in _sets(work, "cli", "search.epochs=1", "search.warmup_epochs=0") for x in ("--set", s)]
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    res = subprocess.run([sys.executable, "-m", "nas", "search", "--strategy", "nni-random", *sets],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    run = work / "runs" / "cli"
    for name in ("student.arch.json", "metrics.csv", "nni_choice.json", "arch_evolution.png", "student_trellis.png"):
        assert (run / name).is_file(), name
    assert not (run / "teacher.arch.json").exists()
    assert "table latency of the student" in res.stdout
    assert list(home.iterdir()) == []
    res = subprocess.run([sys.executable, "-m", "nas", "search", "--strategy", "nni-random", "--resume", *sets],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2 and "only supported by the native searcher" in res.stderr

"""Hand-designed baseline families (every registered one): sizes at several widths and depths, the SegNet output
contract in training and eval, exports within 1e-4 of eager through `nas export`, model files, latency scaling,
and training through `nas train` with and without distillation, refusing bad families and multipliers."""

from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest
import torch

from nas.cli import main
from nas.config import DataConfig
from nas.data import dataset_info
from nas.errors import UnknownNameError, UserError
from nas.exporter import load_torchscript, onnx_session
from nas.io import load_checkpoint, save_checkpoint
from nas.latency.measure import TorchBackend
from nas.models import load_model, save_model
from search_spaces.baselines import BASELINES, build_baseline, latency_measure, scale_to_latency
from search_spaces.baselines.common import repeats, scaled
from search_spaces.baselines.ppliteseg import adaptive_avg_pool
from search_spaces.hrnet import build_hrnet

HW = (64, 128)
K = 11  # digit scenes
ATOL = 1e-4
FAMILIES = BASELINES.names()
EVAL_KEYS = {"logits", "logits8", "feat8"}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _params(net: torch.nn.Module) -> int:
    """Parameters of the deployable network (auxiliary heads left out)."""
    return sum(p.numel() for n, p in net.named_parameters() if not n.startswith("aux"))


def _calibrate_bn(net: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics from two random batches, as training would leave them (the initial ones make an
    untrained network's logits nearly constant, and any export would match)."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    g = torch.Generator().manual_seed(1)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(4, 3, *HW, generator=g))
    return net.eval()


def test_scaling_rules() -> None:
    assert [scaled(c, w) for c, w in ((64, 1.0), (64, 0.5), (16, 0.25), (128, 0.3), (1024, 0.125))] == \
        [64, 32, 8, 40, 128]
    assert all(scaled(c, w) % 8 == 0 and scaled(c, w) >= 8 for c in (8, 16, 100, 1024) for w in (0.01, 0.7, 3.3))
    assert [repeats(n, d) for n, d in ((3, 1.0), (3, 0.1), (1, 0.4), (2, 1.5), (3, 2.0))] == [3, 1, 1, 3, 6]


@pytest.mark.parametrize("family", FAMILIES)
def test_widths_give_the_contract_shapes_and_growing_sizes(family: str) -> None:
    x = torch.randn(2, 3, *HW)
    sizes = []
    for width in (0.25, 0.5, 1.0):
        net = build_baseline(family, K, width=width).train()
        out = net(x)
        assert EVAL_KEYS < set(out)
        aux = [k for k in out if k.startswith("aux")]
        assert aux, "a family trains with auxiliary heads"
        assert out["logits"].shape == (2, K, *HW)
        assert out["logits8"].shape == (2, K, HW[0] // 8, HW[1] // 8)
        assert out["feat8"].shape[0] == 2 and out["feat8"].shape[-2:] == (HW[0] // 8, HW[1] // 8)
        for k in aux:
            assert out[k].shape == (2, K, *HW), k
        sizes.append(_params(net))
    assert sizes[0] < sizes[1] < sizes[2], sizes


@pytest.mark.parametrize("family", FAMILIES)
def test_depth_scales_the_repeated_blocks(family: str) -> None:
    shallow, plain, deep = (_params(build_baseline(family, K, width=0.25, depth=d)) for d in (0.1, 1.0, 2.0))
    assert shallow <= plain < deep


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_learns_and_eval_has_no_aux(family: str) -> None:
    net = build_baseline(family, K, width=0.25).train()
    x = torch.randn(2, 3, *HW)
    out = net(x)
    sum(v.square().mean() for v in out.values()).backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not dead  # no unused module, every auxiliary head reaches its loss
    net.eval()
    with torch.no_grad():
        assert set(net(x)) == EVAL_KEYS
    plain = build_baseline(family, K, width=0.25, aux_heads=False).train()
    assert set(plain(x)) == EVAL_KEYS
    deployable = {k for k in net.state_dict() if not k.startswith("aux")}
    assert set(plain.state_dict()) == deployable  # a model file (no aux) loads into the aux-free network


@pytest.mark.parametrize("family", FAMILIES)
def test_any_input_size_runs(family: str) -> None:
    net = build_baseline(family, K, width=0.25).eval()
    with torch.no_grad():
        for hw in ((32, 32), (75, 100)):
            assert net(torch.randn(1, 3, *hw))["logits"].shape == (1, K, *hw)


def test_matrix_pooling_equals_adaptive_pooling() -> None:
    for hw in ((2, 4), (3, 5), (1, 1), (23, 30)):
        x = torch.randn(2, 3, *hw)
        for bins in (1, 2, 4):
            assert torch.allclose(adaptive_avg_pool(x, bins), torch.nn.functional.adaptive_avg_pool2d(x, bins),
                                  atol=1e-6)


def test_unknown_family_and_bad_multipliers() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown baseline family 'nope' \(known: .*bisenetv2"):
        build_baseline("nope", K)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="multiplier must be a finite number > 0"):
            build_baseline(FAMILIES[0], K, width=bad)
        with pytest.raises(ValueError, match="multiplier must be a finite number > 0"):
            build_baseline(FAMILIES[0], K, depth=bad)


# --------------------------------------------------------------------------- model files and export


def _model_file(path, family: str, width: float = 0.25):
    info = dataset_info(DataConfig())
    net = _calibrate_bn(build_baseline(family, info.num_classes, width=width))
    spec = {"family": family, "width": width, "depth": 1.0}
    return save_model(path, net, "baseline", info.num_classes, class_names=info.class_names,
                      palette=info.palette, input_hw=HW, baseline=spec), net


@pytest.mark.parametrize("family", FAMILIES)
def test_model_file_round_trip(family: str, tmp_path) -> None:
    path, net = _model_file(tmp_path / "model.pt", family)
    model, info = load_model(path)
    assert info["model_kind"] == "baseline" and info["baseline"] == {"family": family, "width": 0.25, "depth": 1.0}
    assert not any(k.startswith("aux") for k in model.state_dict())
    x = torch.randn(1, 3, *HW)
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], net.eval()(x)["logits"])

    state = load_checkpoint(path)
    del state["baseline"]
    save_checkpoint(tmp_path / "nodesc.pt", state)
    with pytest.raises(UserError, match="no baseline description"):
        load_model(tmp_path / "nodesc.pt")
    state["baseline"] = {"family": "nope", "width": 1.0, "depth": 1.0}
    save_checkpoint(tmp_path / "unknown.pt", state)
    with pytest.raises(UserError, match="unknown baseline family 'nope'"):
        load_model(tmp_path / "unknown.pt")


def test_files_without_the_baseline_field_still_load(tmp_path) -> None:
    path = save_model(tmp_path / "teacher.pt", build_hrnet("tiny", K), "hrnet", K, hrnet={"preset": "tiny"})
    state = load_checkpoint(path)
    del state["baseline"]  # as written before the field existed
    save_checkpoint(path, state)
    model, info = load_model(path)
    assert info["model_kind"] == "hrnet" and "baseline" not in info


@pytest.mark.parametrize("family", FAMILIES)
def test_nas_export_torchscript_and_onnx_match_eager(family: str, tmp_path, capsys) -> None:
    path, _ = _model_file(tmp_path / "model.pt", family)
    out = tmp_path / "export"
    code = main(["export", "--checkpoint", str(path), "--out", str(out), "--format", "torchscript",
                 "--format", "onnx", "--format", "json", "--set", "export.measure_latency=false",
                 "--set", "export.real_images=0"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "export_report.json").read_text())
    assert report["model_kind"] == "baseline" and report["input_hw"] == list(HW)
    for fmt in ("torchscript", "onnx"):
        assert report["formats"][fmt]["max_abs_diff"] <= ATOL, (fmt, report["formats"][fmt])
    assert report["formats"]["torchscript"]["method"] == "script"
    assert "no searched architecture" in report["formats"]["json"]["skipped"]
    assert not (out / "model.arch.json").exists()

    model, _ = load_model(path)  # an independent look: another batch size, eager against both files
    x = torch.randn(3, 3, *HW, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x)["logits"]
        ts_out = load_torchscript(out / "model.ts")(x)
    (ort_out,) = onnx_session(out / "model.onnx").run(None, {"image": x.numpy()})
    assert float((ts_out - ref).abs().max()) <= ATOL
    assert float(np.abs(ort_out - ref.numpy()).max()) <= ATOL


# --------------------------------------------------------------------------- latency scaling


def test_scale_to_latency_bisects_to_the_widest_within_target() -> None:
    calls: list[int] = []

    def fake_ms(net: torch.nn.Module) -> float:  # a "latency" that grows with width: parameters / 100k
        assert not net.training and not any(k.startswith("aux") for k in net.state_dict())
        calls.append(_params(net))
        return calls[-1] / 1e5

    family = FAMILIES[0]
    widths = (0.25, 0.5, 0.75, 1.0, 1.25)
    costs = {w: _params(build_baseline(family, K, width=w)) / 1e5 for w in widths}
    target = (costs[0.75] + costs[1.0]) / 2
    width, ms = scale_to_latency(family, K, target, fake_ms, widths=widths)
    assert width == 0.75 and ms == pytest.approx(costs[0.75])
    assert len(calls) <= 3  # bisection over five widths
    assert scale_to_latency(family, K, 1e9, fake_ms, widths=widths)[0] == 1.25
    with pytest.raises(UserError, match=rf"no {family} width within .*the narrowest, 0.25, takes"):
        scale_to_latency(family, K, costs[0.25] / 2, fake_ms, widths=widths)


def test_latency_measure_times_the_logits_with_a_backend() -> None:
    measure = latency_measure(TorchBackend(torch.device("cpu"), threads=1, warmup=1, repeats=2), (1, 3, 32, 64),
                              rounds=1)
    net = build_baseline(FAMILIES[0], K, width=0.25)
    ms = measure(net)
    assert ms > 0 and math.isfinite(ms) and not net.training


# --------------------------------------------------------------------------- training through the CLI


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_config):
    root = tmp_path_factory.mktemp("baselines")
    cfg = tiny_config(root / "tiny.yaml", root / "studies")
    teacher = save_model(root / "teacher.pt", build_hrnet("tiny", K), "hrnet", K, hrnet={"preset": "tiny"},
                         class_names=dataset_info(DataConfig()).class_names)
    return {"root": root, "config": cfg, "teacher": teacher}


def _train(work, name: str, *args: str) -> int:
    return main(["train", "--config", str(work["config"]), "--set", f"run.root={work['root'] / 'runs'}",
                 "--name", name, *args])


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("family", FAMILIES)
def test_train_through_the_cli_without_and_with_kd(family: str, work, capsys) -> None:
    assert _train(work, f"{family}_plain", "--baseline", family, "--width", "0.25") == 0, capsys.readouterr().err
    run = work["root"] / "runs" / f"{family}_plain" / "baseline"
    model, info = load_model(run / "model.pt")
    assert info["model_kind"] == "baseline" and info["baseline"] == {"family": family, "width": 0.25, "depth": 1.0}
    assert info["meta"]["role"] == "baseline" and info["num_classes"] == K
    assert not any(k.startswith("aux") for k in model.state_dict())
    rows = _rows(run / "metrics.csv")
    assert [r["phase"] for r in rows] == ["baseline"] and float(rows[0]["loss_aux"]) > 0
    assert f"({_params(model) / 1e6:.3f} M parameters)" in capsys.readouterr().out

    code = _train(work, f"{family}_kd", "--model", "baseline", "--baseline", family, "--width", "0.25",
                  "--teacher", str(work["teacher"]), "--kd", "pixel,pairwise")
    assert code == 0, capsys.readouterr().err
    run = work["root"] / "runs" / f"{family}_kd" / "baseline"
    row = _rows(run / "metrics.csv")[0]
    for col in ("loss_kd", "kd_pixel_logits", "kd_pairwise_feat8"):
        assert np.isfinite(float(row[col])) and float(row[col]) > 0, col
    assert load_model(run / "model.pt")[1]["meta"]["kd"] == ["pixel", "pairwise"]

    state = load_checkpoint(run / "train.ckpt")
    assert state["model_kind"] == "baseline" and state["baseline"]["family"] == family
    code = _train(work, f"{family}_kd", "--baseline", family, "--width", "0.5", "--teacher", str(work["teacher"]),
                  "--kd", "pixel,pairwise", "--resume")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "holds another baseline" in err[0] and "width 0.25" in err[0] and "width 0.5" in err[0]


@pytest.mark.parametrize(("args", "message"), [
    (("--baseline", "nope"), rf"unknown baseline family 'nope' \(known: {re.escape(', '.join(FAMILIES))}\)$"),
    (("--baseline", "bisenetv2", "--width", "0"), "train.baseline_width must be a finite number > 0, got 0.0"),
    (("--baseline", "bisenetv2", "--width", "-0.5"), "train.baseline_width must be a finite number > 0"),
    (("--model", "baseline", "--set", "train.baseline_depth=0"), "train.baseline_depth must be a finite number"),
    (("--model", "baseline", "--arch", "student.arch.json"), "--arch was given but --model baseline"),
    (("--model", "student", "--width", "0.5"), "--width only apply to --model baseline .*, not to --model student"),
    (("--baseline", "bisenetv2", "--kd", "okddip"), "okddip distils within a student's peer group"),
])
def test_cli_refusals_are_one_line_exit_2(args, message, work, capsys) -> None:
    assert _train(work, "refused", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert re.search(message, err[0]), err[0]
    assert not (work["root"] / "runs" / "refused").exists()  # refused before anything was written

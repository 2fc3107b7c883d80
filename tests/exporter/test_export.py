"""`nas.exporter` and `nas export`: TorchScript and ONNX match eager within 1e-4 on random and real inputs, a
failed check leaves no file behind, the JSON round-trips, and the CLI writes the files or fails in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.cli import main
from nas.config import DataConfig, load_config
from nas.data import dataset_info
from nas.errors import UserError
from nas.exporter import (
    FILE_NAMES,
    check_inputs,
    export_json,
    export_onnx,
    export_torchscript,
    load_torchscript,
    measure_latencies,
    onnx_session,
    require_onnx,
    verify_artifact,
)
from nas.io import save_checkpoint
from nas.models import load_model, save_model
from search_spaces.arch import load_architecture
from search_spaces.builder import build_network
from search_spaces.hrnet import build_hrnet
from search_spaces.random_arch import random_architecture
from search_spaces.registry import space_spec

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

HW = (64, 128)
ATOL = 1e-4
KINDS = ("bilinear", "pixel_shuffle", "hrnet", "quickstart")
QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "quickstart.yaml"


def _data(root) -> DataConfig:
    return DataConfig(root=str(root), num_train=8, num_val=4, image_size=HW)


def _calibrate_bn(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Batch-norm statistics from a few random batches, as training would leave them: with the initial ones
    (mean 0, var 1) an untrained student's logits barely depend on the input, and any export would match."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    g = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(4, 3, *HW, generator=g))
    return net.eval()


def _save(path, kind: str, seed: int = 0):
    """A tiny student (with fixed upsamplers), a student of the quick start's space (its layers, Fch, stem and
    head widths, random upsamplers) or the HRNet "tiny" teacher, saved as a model file."""
    info = dataset_info(DataConfig())
    torch.manual_seed(seed)
    if kind == "hrnet":
        net = build_hrnet("tiny", info.num_classes)
        extra = {"hrnet": {"preset": "tiny"}}
    else:
        if kind == "quickstart":
            sc = load_config(QUICKSTART).space
            spec = space_spec(sc.name, layers=sc.layers, fch=sc.fch, num_classes=info.num_classes)
            choice = {"stem_width": sc.student_stem_width, "head_width": sc.student_head_width}
        else:
            spec, choice = space_spec("tiny", num_classes=info.num_classes), {"upsample": kind}
        arch = random_architecture(spec, np.random.default_rng(seed), **choice)
        net = build_network(arch, aux_heads=False)
        extra = {"arch": arch.to_dict()}
    _calibrate_bn(net, seed)
    return save_model(path, net, "hrnet" if kind == "hrnet" else "segnet", info.num_classes,
                      class_names=info.class_names, palette=info.palette, input_hw=HW, **extra)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {"root": root, **{kind: _save(root / f"{kind}.pt", kind) for kind in KINDS}}


@pytest.fixture(scope="module")
def inputs(files):
    return check_inputs(HW, _data(files["root"] / "data"), n_real=4, seed=0)


def test_check_inputs_has_random_and_real_batches(inputs):
    assert inputs["random"].shape == (2, 3, *HW)
    assert inputs["real"].shape == (4, 3, *HW)
    assert inputs["real"].std() > 0.1  # real images, not zeros


@pytest.mark.parametrize("kind", KINDS)
def test_torchscript_and_onnx_match_eager(kind, files, inputs, tmp_path):
    model, _ = load_model(files[kind])
    example = inputs["random"][:1]
    ts = export_torchscript(model, example, tmp_path / "model.ts")
    onnx_art = export_onnx(model, example, tmp_path / "model.onnx", opset=17)
    assert ts.method == "script" and not model.training
    for art in (ts, onnx_art):
        check = verify_artifact(art, model, inputs, ATOL)
        assert set(check.diffs) == {"random", "real"}
        assert check.ok and check.max_abs_diff <= ATOL
        assert art.path.is_file()
    # an independent look: batch 3 (the ONNX batch axis is dynamic), eager against both files
    x = torch.randn(3, 3, *HW, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x)["logits"]
        ts_out = load_torchscript(ts.path)(x)
    (ort_out,) = onnx_session(onnx_art.path).run(None, {"image": x.numpy()})
    assert ort_out.shape == (3, model(x[:1])["logits"].shape[1], *HW)
    assert float((ts_out - ref).abs().max()) <= ATOL
    assert float(np.abs(ort_out - ref.numpy()).max()) <= ATOL

    latency = measure_latencies(model, [ts, onnx_art], HW, threads=1, warmup=1, repeats=2)
    assert set(latency) == {"torch_eager", "torchscript", "onnxruntime"}
    assert all(v > 0 for v in latency.values())


def _tamper_torchscript(path) -> None:
    module = torch.jit.load(str(path))
    with torch.no_grad():
        next(module.parameters()).add_(0.5)
    torch.jit.save(module, str(path))


def _tamper_onnx(path) -> None:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.5, init.name))
    onnx.save(proto, str(path))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_failed_check_raises_and_leaves_no_file(fmt, files, inputs, tmp_path):
    model, _ = load_model(files["bilinear"])
    path = tmp_path / FILE_NAMES[fmt]
    export = export_torchscript if fmt == "torchscript" else export_onnx
    art = export(model, inputs["random"][:1], path)
    (_tamper_torchscript if fmt == "torchscript" else _tamper_onnx)(path)
    with pytest.raises(UserError, match=rf"{fmt} export does not match .* above export.atol \+ export.rtol"):
        verify_artifact(art, model, inputs, ATOL, rtol=1e-5)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_json_round_trips_through_load_architecture(files, tmp_path):
    model, info = load_model(files["pixel_shuffle"])
    art = export_json(info, tmp_path / "model.arch.json", params=123, input_hw=HW)
    arch = load_architecture(art.path)
    assert arch.to_dict()["branches"] == info["arch"]["branches"]
    assert arch.final_upsample == "pixel_shuffle" and arch.space.num_classes == info["num_classes"]
    assert arch.meta["params"] == 123 and arch.meta["input_hw"] == list(HW)
    rebuilt = build_network(arch, aux_heads=False)
    rebuilt.load_state_dict(model.state_dict())  # the JSON describes exactly the exported network


def test_json_of_a_teacher_is_a_user_error(files, tmp_path):
    _, info = load_model(files["hrnet"])
    with pytest.raises(UserError, match="needs a searched architecture"):
        export_json(info, tmp_path / "model.arch.json")
    assert not (tmp_path / "model.arch.json").exists()


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with pytest.raises(UserError, match=r"'onnx' extra"):
        require_onnx()


# --------------------------------------------------------------------------- the CLI


def _nas(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, timeout=180,
                          cwd=cwd)


def _small(files) -> list[str]:
    return ["--set", f"data.root={files['root'] / 'data'}", "--set", "data.num_train=8", "--set",
            "data.num_val=4", "--set", "data.image_size=[64,128]", "--set", "export.threads=1",
            "--set", "export.warmup=1", "--set", "export.repeats=3"]


@pytest.mark.slow
def test_cli_export_writes_three_files_and_a_report(files, tmp_path):
    out = tmp_path / "out"
    res = _nas(tmp_path, "export", "--checkpoint", str(files["bilinear"]), "--out", str(out),
               "--format", "torchscript", "--format", "onnx", "--format", "json", *_small(files))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["export_report.json", "model.arch.json", "model.onnx",
                                                     "model.ts"]
    report = json.loads((out / "export_report.json").read_text())
    assert report["input_hw"] == list(HW) and report["atol"] == ATOL
    for fmt in ("torchscript", "onnx"):
        assert report["formats"][fmt]["max_abs_diff"] <= ATOL
        assert set(report["formats"][fmt]["diffs"]) == {"random", "real"}
    assert set(report["latency_ms"]) == {"torch_eager", "torchscript", "onnxruntime"}
    assert report["versions"]["onnxruntime"] and report["config"]["export"]["threads"] == 1
    assert "torchscript" in res.stdout and "report:" in res.stdout


def _training_checkpoint(path):
    model, _ = load_model(_save(path.with_suffix(".model.pt"), "bilinear"))
    return save_checkpoint(path, {"epoch": 3, "model": model.state_dict(), "optimizer": {}})


def _corrupt(path):
    path.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    return path


@pytest.mark.slow
def test_cli_export_training_checkpoint_is_one_line_exit_2(tmp_path):
    path = _training_checkpoint(tmp_path / "ckpt.pt")
    res = _nas(tmp_path, "export", "--checkpoint", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert str(path) in lines[0] and "not a nas model file" in lines[0]
    assert not (tmp_path / "out" / "model.ts").exists()


@pytest.mark.parametrize("bad", ["corrupt", "missing"])
def test_export_corrupt_or_missing_checkpoint_is_one_line_exit_2(bad, tmp_path, capsys):
    path = _corrupt(tmp_path / "ckpt.pt") if bad == "corrupt" else tmp_path / "ckpt.pt"
    assert main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0]
    assert not (tmp_path / "out").exists()


def test_weights_not_fitting_is_a_user_error(files, tmp_path, capsys):
    state = torch.load(files["bilinear"], weights_only=True)
    state["state_dict"] = {k: v for k, v in list(state["state_dict"].items())[1:]}
    save_checkpoint(tmp_path / "bad.pt", state)
    assert main(["export", "--checkpoint", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not fit" in err[0]


@pytest.mark.parametrize("kind", ["pixel_shuffle", "quickstart", "hrnet"])
def test_dynamic_onnx_matches_eager_at_other_sizes(kind, files, tmp_path):
    model, _ = load_model(files[kind])
    g = torch.Generator().manual_seed(2)
    art = export_onnx(model, torch.randn(1, 3, *HW, generator=g), tmp_path / "model.onnx", dynamic_hw=True)
    assert art.method.endswith("-dynamic-hw")
    session = onnx_session(art.path)
    for hw in (HW, (96, 160), (128, 256)):
        x = torch.randn(1, 3, *hw, generator=g)
        with torch.no_grad():
            ref = model(x)["logits"].numpy()
        (out,) = session.run(None, {"image": x.numpy()})
        assert out.shape == ref.shape
        assert float(np.abs(out - ref).max()) <= ATOL


def test_cli_export_dynamic_reports_the_second_size(files, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", "--checkpoint", str(files["quickstart"]), "--out", str(out), "--format", "onnx",
                 "--dynamic", "--set", "export.measure_latency=false", "--set", "export.real_images=0"]) == 0
    report = json.loads((out / "export_report.json").read_text())
    row = report["formats"]["onnx"]
    assert report["dynamic_hw"] is True and row["dynamic_hw"] is True
    assert row["second_size"] == f"{HW[0] + 32}x{HW[1] + 64}" and row["second_max_abs_diff"] <= ATOL
    assert "dynamic height/width" in capsys.readouterr().out


def test_tolerance_grows_with_the_logits_scale():
    from nas.exporter.verify import Verification

    small = Verification("onnx", "m.onnx", 2e-4, 1e-4, logit_scale=5.0, rtol=1e-5)
    large = Verification("onnx", "m.onnx", 2e-4, 1e-4, logit_scale=20.0, rtol=1e-5)
    assert small.tolerance == pytest.approx(1.5e-4) and not small.ok
    assert large.tolerance == pytest.approx(3e-4) and large.ok

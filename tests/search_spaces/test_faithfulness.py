"""FasterSeg's released student, imported and rebuilt, has FasterSeg's own size and compute."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nas.io import read_json
from search_spaces.builder import build_network
from search_spaces.complexity import count_aux_params, count_macs, count_params
from search_spaces.fasterseg_import import import_fasterseg

# FasterSeg's released student (arch_1), with the size and compute FasterSeg's own code measures for it
REF = Path(__file__).resolve().parent / "data" / "fasterseg_arch1_student.json"


@pytest.fixture(scope="module")
def ref() -> dict:
    return read_json(REF)


@pytest.fixture(scope="module")
def net(ref):
    return build_network(import_fasterseg(ref))


def test_import_structure(ref):
    arch = import_fasterseg(ref)
    assert [b.name for b in arch.branches] == ["1/32", "1/16"]
    assert [len(b.cells) for b in arch.branches] == [10, 9]
    assert arch.branches[0].cells[3].op == "zoomed_conv"
    assert arch.space.name == "fasterseg" and arch.kind == "student"
    assert arch.final_upsample == "bilinear" and all(u == "bilinear" for b in arch.branches for u in b.upsample)


def test_shared_prefix_is_computed_once(net):
    # 10 + 9 cells, the first three shared (cell 3 differs in op)
    assert len(net.cells) == 16


def test_parameters(ref, net):
    figures = ref["figures_measured_with_fasterseg_code"]
    assert count_params(net) == pytest.approx(figures["inference_path_params"], rel=0.01)
    assert count_aux_params(net) == pytest.approx(figures["aux_head_params"], rel=0.01)
    assert count_params(net, inference_only=False) == count_params(net) + count_aux_params(net)


@pytest.mark.parametrize(("hw", "key"), [((1024, 2048), "gmacs_1x3x1024x2048"), ((256, 512), "gmacs_1x3x256x512")])
def test_macs(ref, net, hw, key):
    gmacs = count_macs(net, hw) / 1e9
    assert gmacs == pytest.approx(ref["figures_measured_with_fasterseg_code"][key], rel=0.02)


def test_macs_leave_the_model_untouched(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    count_macs(net, (64, 128))
    assert net.training
    assert all(v.device.type == "cpu" for v in net.state_dict().values())
    assert all((before[k] == v).all() for k, v in net.state_dict().items())


def test_cli_import_then_show(tmp_path):
    out = tmp_path / "fasterseg_arch1.json"
    res = subprocess.run([sys.executable, "-m", "nas", "arch", "import-fasterseg", str(REF), str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert out.is_file()
    res = subprocess.run([sys.executable, "-m", "nas", "arch", "show", str(out), "--input", "1024x2048"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "params (inference path): 3.42 M" in res.stdout
    assert "GMACs @ 1x3x1024x2048: 27.77" in res.stdout

"""Derived networks of every registered space: build, train/eval forward, backward, TorchScript, export, JSON."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from search_spaces.arch import Architecture, Branch, Cell, load_architecture, save_architecture
from search_spaces.builder import InferenceWrapper, build_network, plan_network
from search_spaces.ops import Operator
from search_spaces.random_arch import random_architecture
from search_spaces.registry import list_spaces, space_spec
from search_spaces.upsample import UPSAMPLERS

HW = (64, 128)  # a zoomed op at 1/32 still has 1×2 pixels


def _arch(space: str, upsample: str, branches: tuple[int, int], seed: int = 0) -> Architecture:
    spec = space_spec(space, num_classes=5)
    return random_architecture(spec, np.random.default_rng(seed), branches=branches, upsample=upsample)


CASES = [(s, u, b) for s in list_spaces() for u in UPSAMPLERS for b in ((32, 16), (32, 8))]


@pytest.mark.parametrize(("space", "upsample", "branches"), CASES)
def test_forward_backward_train_and_eval(space, upsample, branches):
    torch.manual_seed(0)
    arch = _arch(space, upsample, branches)
    net = build_network(arch)
    x = torch.randn(2, 3, *HW)
    out = net.train()(x)
    k = arch.space.num_classes
    assert out["logits"].shape == (2, k, *HW)
    assert out["logits8"].shape == (2, k, HW[0] // 8, HW[1] // 8)
    assert out["feat8"].shape[-2:] == (HW[0] // 8, HW[1] // 8)
    assert {"aux16", "aux32"} <= set(out)  # the 1/32 branch always passes 1/16
    for name in ("aux16", "aux32"):
        assert out[name].shape == (2, k, *HW)
    loss = sum(o.square().mean() for o in out.values())
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())  # no dead branch
    net.eval()
    with torch.no_grad():
        ev = net(x)
    assert set(ev) == {"logits", "logits8", "feat8"}
    assert torch.isfinite(ev["logits"]).all()


@pytest.mark.parametrize(("space", "upsample", "branches"), CASES)
def test_torchscript_equals_eager(space, upsample, branches):
    torch.manual_seed(1)
    net = build_network(_arch(space, upsample, branches, seed=1)).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 3, *HW)
    with torch.no_grad():
        eager, script = net(x), scripted(x)
    for key in ("logits", "logits8", "feat8"):
        torch.testing.assert_close(script[key], eager[key], atol=1e-5, rtol=0)


@pytest.mark.parametrize("upsample", UPSAMPLERS)
def test_trace_and_onnx_export_equal_eager(upsample):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(2)
    net = build_network(_arch("tiny", upsample, (32, 16), seed=2), aux_heads=False).eval()
    wrapper = InferenceWrapper(net)
    assert not wrapper.training
    x = torch.randn(1, 3, *HW)
    with torch.no_grad():
        ref = net(x)["logits"]
        traced = torch.jit.trace(wrapper, x)
        torch.testing.assert_close(traced(x), ref, atol=1e-5, rtol=0)
    buf = io.BytesIO()
    torch.onnx.export(wrapper, (x,), buf, dynamo=False, input_names=["image"], output_names=["logits"])
    session = ort.InferenceSession(buf.getvalue())
    (onnx_logits,) = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(onnx_logits, ref.numpy(), atol=1e-4)


@pytest.mark.parametrize("space", list_spaces())
def test_json_round_trip(space, tmp_path):
    arch = _arch(space, "random", (32, 16), seed=3)
    path = save_architecture(arch, tmp_path / "arch.json")
    back = load_architecture(path)
    assert back.branches == arch.branches
    assert back.space == arch.space
    assert (back.stem_width, back.head_width, back.final_upsample, back.kind) == (
        arch.stem_width, arch.head_width, arch.final_upsample, arch.kind)
    a, b = build_network(arch), build_network(back)
    assert [type(m).__name__ for m in a.modules()] == [type(m).__name__ for m in b.modules()]
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())


def _n_ops(net: torch.nn.Module) -> int:
    return sum(isinstance(m, Operator) for m in net.modules())


def test_shared_prefix_is_computed_once():
    spec = space_spec("tiny")
    w = 0.5
    head = 2 / 3
    common = (Cell(8, "conv", w), Cell(8, "conv_2x", w), Cell(16, "zoomed_conv", w))
    b32 = Branch(common + (Cell(16, "conv", w), Cell(32, "conv", head)), ("bilinear", "bilinear"))
    # cells 0-2 agree and lead to the same scale: shared; cell 3 (same op) is b16's last cell: not shared
    b16 = Branch(common + (Cell(16, "conv", head),), ("bilinear",))
    arch = Architecture(space=spec, branches=(b32, b16), stem_width=w, head_width=head)
    net = build_network(arch)
    assert _n_ops(net) == 5 + 4 - 3
    plan = plan_network(arch)
    assert plan.branches[0].feats[:3] == plan.branches[1].feats[:3]
    assert plan.branches[0].feats[3] != plan.branches[1].feats[3]
    # the shared cells run once per forward pass
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in net.modules() if isinstance(m, Operator)]
    net.eval()(torch.randn(1, 3, *HW))
    for h in hooks:
        h.remove()
    assert len(calls) == 6


def test_diverging_next_scale_is_not_shared():
    spec = space_spec("tiny")
    head = 2 / 3
    b32 = Branch((Cell(8, "conv", 0.5), Cell(16, "conv", 0.5), Cell(32, "conv", head)), ("bilinear",) * 2)
    b8 = Branch((Cell(8, "conv", 0.5), Cell(8, "conv", head)), ())  # same first cell, but it does not stride
    net = build_network(Architecture(space=spec, branches=(b32, b8), stem_width=0.5, head_width=head))
    assert _n_ops(net) == 5


@pytest.mark.parametrize("space", list_spaces())
def test_random_networks_share_their_prefix(space):
    rng = np.random.default_rng(4)
    shared = 0
    for _ in range(10):
        arch = random_architecture(space_spec(space), rng)
        total = sum(len(b.cells) for b in arch.branches)
        n = len(plan_network(arch).cells)
        assert n <= total
        shared += total - n
        assert _n_ops(build_network(arch, aux_heads=False)) == n
    assert shared > 0


@pytest.mark.parametrize("space", list_spaces())
def test_random_architectures_valid_varied_deterministic(space):
    spec = space_spec(space)
    archs = [random_architecture(spec, np.random.default_rng(7)) for _ in range(2)]
    assert archs[0] == archs[1]
    rng = np.random.default_rng(8)
    seen_pairs, seen_ups = set(), set()
    for _ in range(60):
        arch = random_architecture(spec, rng)
        seen_pairs.add(arch.scales)
        seen_ups.update(u for b in arch.branches for u in b.upsample)
        assert arch.branches[0].scale == 32
        for b in arch.branches:
            assert len(b.cells) <= spec.layers
            assert all(c.op in spec.ops for c in b.cells)
            runs: dict[int, list[str]] = {}
            for c in b.cells:
                runs.setdefault(c.scale, []).append(c.op)
            assert all(any(op != "skip" for op in ops) for ops in runs.values())
    assert seen_pairs == {(32, 16), (32, 8)}
    assert seen_ups == set(UPSAMPLERS)
    fixed = random_architecture(spec, rng, branches=(32, 8), upsample="pixel_shuffle")
    assert fixed.scales == (32, 8)
    assert fixed.final_upsample == "pixel_shuffle"
    assert all(u == "pixel_shuffle" for b in fixed.branches for u in b.upsample)

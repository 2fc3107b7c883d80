"""The two operator forms agree: a SlimOperator at one width computes what the plain Operator computes with the
sliced weights and that width's BatchNorm copied in; plain operators compile with TorchScript."""

from __future__ import annotations

import pytest
import torch

from search_spaces.ops import OPS, Operator, SlimOperator

C_IN_MAX, CHOICES = 16, (8, 12, 16)
# (input channels, width index): equal in/out widths (skip is the identity at stride 1) and a width change
WIDTHS = [(12, 1), (10, 0), (16, 2)]


def _randomise_bn(module: torch.nn.Module, gen: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def _copy_bn(dst: torch.nn.BatchNorm2d, src: torch.nn.BatchNorm2d) -> None:
    dst.load_state_dict(src.state_dict())


def _plain_from_slim(slim: SlimOperator, c_in: int, width_idx: int) -> Operator:
    c_out = CHOICES[width_idx]
    plain = Operator(slim.op, c_in, c_out, slim.stride)
    with torch.no_grad():
        if slim.reduce is not None:
            if isinstance(plain.skip, torch.nn.Identity):
                return plain
            parts = slim.reduce_out[width_idx]
            plain.skip.conv1.weight.copy_(slim.reduce[0].weight[: parts[0], :c_in])
            if plain.skip.conv2 is not None:
                plain.skip.conv2.weight.copy_(slim.reduce[1].weight[: parts[1], :c_in])
            _copy_bn(plain.skip.bn, slim.reduce_bns[width_idx])
        for i, (p, s) in enumerate(zip(plain.units, slim.units)):
            p.conv.weight.copy_(s.weight[:c_out, : (c_in if i == 0 else c_out)])
            _copy_bn(p.bn, s.bns[width_idx])
    return plain


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(("c_in", "width_idx"), WIDTHS)
def test_slim_equals_plain_with_sliced_weights(op, stride, c_in, width_idx):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    slim = SlimOperator(op, C_IN_MAX, CHOICES, stride)
    with torch.no_grad():
        _randomise_bn(slim, gen)
    slim.eval()
    plain = _plain_from_slim(slim, c_in, width_idx).eval()
    x = torch.randn(2, c_in, 16, 24, generator=gen)
    with torch.no_grad():
        a, b = slim(x, width_idx), plain(x)
    assert a.shape == (2, CHOICES[width_idx], 16 // stride, 24 // stride)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("stride", [1, 2])
def test_operator_torchscript(op, stride):
    torch.manual_seed(0)
    for c_in, c_out in ((8, 8), (8, 12)):
        plain = Operator(op, c_in, c_out, stride).eval()
        scripted = torch.jit.script(plain)
        x = torch.randn(1, c_in, 16, 24)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), plain(x), atol=1e-6, rtol=0)


def test_operator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown operator"):
        Operator("conv_7x7", 4, 4)
    with pytest.raises(ValueError, match="stride"):
        Operator("conv", 4, 4, stride=3)

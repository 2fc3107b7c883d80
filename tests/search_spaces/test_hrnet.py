"""The HRNet-like teacher: output names and shapes, gradients, sizes, TorchScript."""

from __future__ import annotations

import warnings

import pytest
import torch

from search_spaces.hrnet import HRNET_PRESETS, HRNetTeacher, build_hrnet


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("preset", sorted(HRNET_PRESETS))
def test_forward_shapes_and_backward(preset: str) -> None:
    model = build_hrnet(preset, num_classes=5)
    c = model.spec.width
    out = model(torch.randn(2, 3, 64, 128))
    expected = {
        "logits": (2, 5, 64, 128),
        "logits_lowres": (2, 5, 16, 32),
        "feat4": (2, c, 16, 32),
        "feat8": (2, 2 * c, 8, 16),
        "feat16": (2, 4 * c, 4, 8),
        "feat32": (2, 8 * c, 2, 4),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert model.feature_channels() == {k: v[1] for k, v in expected.items()}
    loss = out["logits"].logsumexp(1).mean() + sum(
        out[k].pow(2).mean() for k in ("feat8", "feat16", "feat32")
    )
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_parameter_counts() -> None:
    counts = {p: sum(q.numel() for q in build_hrnet(p, 19).parameters()) for p in HRNET_PRESETS}
    print(f"HRNet parameters at 19 classes: {counts}")
    assert 1.0e6 < counts["w18_small"] < 4.0e6  # HRNetV2-W18-Small-v1 has 1.5 M, -v2 3.9 M
    assert counts["tiny"] < 0.5e6


def test_overrides_and_errors() -> None:
    model = HRNetTeacher(3, width=4, blocks=1, num_modules=2, preset="tiny")
    assert model.spec.width == 4 and model.spec.blocks == (1, 1, 1, 1) and model.spec.num_modules == (2, 2, 2)
    assert model(torch.randn(2, 3, 32, 32))["feat32"].shape == (2, 32, 1, 1)
    with pytest.raises(ValueError, match="unknown HRNet preset"):
        build_hrnet("w48", 19)
    with pytest.raises(ValueError, match="blocks"):
        HRNetTeacher(3, blocks=(1, 0, 1, 1))


def test_torchscript_matches_eager() -> None:
    model = build_hrnet("tiny", 4).eval()
    x = torch.randn(1, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model)
    with torch.no_grad():
        eager, script = model(x), scripted(x)
    for key, value in eager.items():
        torch.testing.assert_close(script[key], value)

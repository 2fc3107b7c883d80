"""PixelShuffle upsamplers: ICNR initialisation makes conv + shuffle equal nearest upsampling of a C-channel conv."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from search_spaces.upsample import PixelShuffleUp, init_pixel_shuffle, make_upsampler


@pytest.mark.parametrize("channels,factor", [(3, 2), (5, 4), (4, 8)])
def test_icnr_equals_nearest_upsampling_of_one_conv_at_init(channels: int, factor: int) -> None:
    torch.manual_seed(0)
    up = PixelShuffleUp(channels, factor)
    x = torch.randn(2, channels, 5, 7)
    r2 = factor * factor
    # the C-channel conv ICNR was drawn from: every r²-th filter of the pointwise kernel
    w0, b0 = up.pointwise.weight[::r2], up.pointwise.bias[::r2]
    expected = F.interpolate(F.conv2d(up.depthwise(x), w0, b0), scale_factor=factor, mode="nearest")
    assert torch.allclose(up(x), expected, atol=1e-6)
    # and the repetition is filter-by-filter (repeat_interleave), which is what PixelShuffle reads
    assert torch.equal(up.pointwise.weight, w0.repeat_interleave(r2, dim=0))


def test_plain_init_is_not_nearest_and_switch_redraws_every_upsampler() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(PixelShuffleUp(4, 2), make_upsampler("bilinear", 4, 2), PixelShuffleUp(4, 2))
    assert init_pixel_shuffle(model, icnr=False) == 2
    w = model[0].pointwise.weight
    assert not torch.equal(w, w[::4].repeat_interleave(4, dim=0))
    assert init_pixel_shuffle(model, icnr=True) == 2
    w = model[2].pointwise.weight
    assert torch.equal(w, w[::4].repeat_interleave(4, dim=0))


def test_pixel_shuffle_output_shape() -> None:
    assert make_upsampler("pixel_shuffle", 6, 4)(torch.randn(1, 6, 3, 5)).shape == (1, 6, 12, 20)

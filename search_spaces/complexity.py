"""Model size and compute: parameters (inference path vs training-only auxiliary heads) and MACs.

MACs are counted the way the FasterSeg reference figures were: `torch.utils.flop_counter.FlopCounterMode`
in eval mode (so the auxiliary heads do not run), reported FLOPs / 2. The count runs on a copy of the model on
the `meta` device, so even 1024×2048 inputs cost no memory and almost no time.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["AUX_PREFIX", "count_params", "count_aux_params", "count_macs"]

AUX_PREFIX = "aux."  # derived networks keep their training-only heads in the `aux` ModuleDict


def _is_aux(name: str) -> bool:
    return name.startswith(AUX_PREFIX)


def count_params(model: nn.Module, inference_only: bool = True) -> int:
    """Number of parameters; `inference_only` leaves out the training-only auxiliary heads."""
    return sum(p.numel() for n, p in model.named_parameters() if not (inference_only and _is_aux(n)))


def count_aux_params(model: nn.Module) -> int:
    """Parameters of the auxiliary heads alone."""
    return sum(p.numel() for n, p in model.named_parameters() if _is_aux(n))


def count_macs(model: nn.Module, input_hw: tuple[int, int], batch: int = 1, in_channels: int = 3) -> int:
    """Multiply-accumulates of one eval-mode forward pass on a `[batch, in_channels, H, W]` input."""
    h, w = input_hw
    if h < 1 or w < 1 or batch < 1:
        raise ValueError(f"input size must be positive but got batch {batch}, {h}x{w}.")
    meta = copy.deepcopy(model).to(torch.device("meta")).eval()
    x = torch.empty(batch, in_channels, h, w, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(x)
    return counter.get_total_flops() // 2

"""Straight-through Gumbel-softmax sampling with an explicit random generator.

Gumbel-max trick (Jang, Gu & Poole, ICLR 2017, eq. 1–2; Maddison et al. 2017): with g_i = −log(−log U_i),
U_i ~ Uniform(0, 1), the index argmax_i (z_i + g_i) is distributed as softmax(z). The relaxed sample is

    y_i = exp((z_i + g_i)/τ) / Σ_j exp((z_j + g_j)/τ)                                    (Jang et al., eq. 2)

and the *hard* straight-through sample (their §2.2, used by FasterSeg for widths and by GDAS for operators)
returns one_hot(argmax y) in the forward pass while its gradient is the one of y:

    y_hard = one_hot(k) − sg(y) + y,        ∂y_hard/∂z_j = ∂y/∂z_j = (1/τ) · y_i (δ_ij − y_j).

The noise is drawn on the generator's device (CPU by default) and moved to the logits' device, so a seed gives
the same choices on CPU and CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gumbel_softmax_st", "sample_gumbel"]

_EPS = 1e-10


def sample_gumbel(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Standard Gumbel noise of `shape`, from `generator` (torch's global RNG when None), on `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(tuple(shape), generator=generator, device=gen_device).clamp_(_EPS, 1.0 - _EPS)
    g = -torch.log(-torch.log(u))
    return g if device is None else g.to(device)


def gumbel_softmax_st(
    logits: torch.Tensor,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
    hard: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample along the last dimension of `logits` `[..., K]`.

    Returns `(y, index)`: `y` `[..., K]` is the straight-through one-hot (`hard=True`) or the relaxed sample
    (`hard=False`); `index` `[...]` (int64) is argmax of the perturbed logits in both cases.
    """
    if tau <= 0:
        raise ValueError(f"Gumbel-softmax temperature must be positive but got {tau}.")
    g = sample_gumbel(logits.shape, generator, logits.device).to(logits.dtype)
    y = F.softmax((logits + g) / tau, dim=-1)
    index = y.detach().argmax(dim=-1)
    if not hard:
        return y, index
    one_hot = F.one_hot(index, logits.shape[-1]).to(y.dtype)
    return one_hot - y.detach() + y, index

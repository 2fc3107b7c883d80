from __future__ import annotations

import pytest
import torch

from search_spaces.gumbel import gumbel_softmax_st, sample_gumbel


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_hard_sample_is_one_hot_at_index():
    logits = torch.randn(7, 5)
    y, idx = gumbel_softmax_st(logits, 1.0, _gen())
    assert y.shape == (7, 5) and idx.shape == (7,)
    assert torch.equal(y, torch.nn.functional.one_hot(idx, 5).float())


def test_seeded_generator_is_deterministic():
    logits = torch.randn(4, 3)
    a = gumbel_softmax_st(logits, 0.5, _gen(3))
    b = gumbel_softmax_st(logits, 0.5, _gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_straight_through_gradient_is_softmax_jacobian(tau):
    """∂y_hard/∂z = (1/τ)·y(δ − y) for the relaxed sample y with the same noise (Jang et al. 2017, §2.2)."""
    logits = torch.tensor([0.3, -0.2, 1.0, 0.1], dtype=torch.float64, requires_grad=True)
    upstream = torch.tensor([0.7, -1.3, 0.4, 2.0], dtype=torch.float64)
    y_hard, _ = gumbel_softmax_st(logits, tau, _gen(5))
    (y_hard * upstream).sum().backward()
    g = sample_gumbel((4,), _gen(5)).double()
    y = torch.softmax((logits.detach() + g) / tau, -1)
    jac = (torch.diag(y) - torch.outer(y, y)) / tau  # symmetric
    assert torch.allclose(logits.grad, jac @ upstream, atol=1e-10)
    # and against central finite differences of the relaxed sample (same generator seed)
    eps, fd = 1e-6, torch.zeros(4, dtype=torch.float64)
    for j in range(4):
        d = torch.zeros(4, dtype=torch.float64)
        d[j] = eps
        plus = gumbel_softmax_st(logits.detach() + d, tau, _gen(5), hard=False)[0]
        minus = gumbel_softmax_st(logits.detach() - d, tau, _gen(5), hard=False)[0]
        fd[j] = ((plus - minus) * upstream).sum() / (2 * eps)
    assert torch.allclose(logits.grad, fd, atol=1e-6)


def test_index_frequencies_follow_softmax():
    logits = torch.tensor([0.5, -1.0, 1.2, 0.0])
    n = 40000
    _, idx = gumbel_softmax_st(logits.expand(n, 4), 1.0, _gen(11))
    freq = torch.bincount(idx, minlength=4).float() / n
    assert torch.allclose(freq, torch.softmax(logits, -1), atol=0.01)


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature"):
        gumbel_softmax_st(torch.zeros(3), 0.0)

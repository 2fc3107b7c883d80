"""KD losses against hand-computed values on tiny tensors, plus the registry and the schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nas.distill import (
    KD_LOSSES,
    HolisticAdversarial,
    KDLoss,
    LossSchedule,
    create_kd_loss,
    list_kd_losses,
    register_kd_loss,
)

# student / teacher logits [1, 2, 1, 2]: two classes at two pixels, written out by hand
S = [[1.0, 0.0], [0.0, 2.0]]  # S[class][pixel]
T = [[0.5, 1.0], [1.5, -1.0]]


def _t(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(1, 2, 1, 2)


def _softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _pixel_kl(pixel: int, temp: float) -> float:
    q_s = _softmax([S[c][pixel] / temp for c in range(2)])
    q_t = _softmax([T[c][pixel] / temp for c in range(2)])
    return _kl(q_t, q_s)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --------------------------------------------------------------------------- registry


def test_registry_names_and_duplicates() -> None:
    assert set(list_kd_losses()) >= {"pixel", "pairwise", "cwd", "holistic", "feature"}
    assert tuple(KD_LOSSES) == list_kd_losses()
    with pytest.raises(ValueError, match="already registered"):
        register_kd_loss("pixel")(type("Dup", (KDLoss,), {}))
    with pytest.raises(ValueError, match="unknown KD loss 'nope'"):
        create_kd_loss("nope")
    with pytest.raises(ValueError, match="bad arguments"):
        create_kd_loss("pixel", tau=3)
    with pytest.raises(TypeError):
        KD_LOSSES["x"] = KDLoss  # type: ignore[index]


def _inputs(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A loss and a (student, teacher) pair of random inputs that this loss accepts."""
    if name == "holistic":
        return (
            create_kd_loss(name, num_classes=3, width=4, depth=2),
            torch.randn(2, 3, 8, 8),
            torch.randn(2, 3, 8, 8),
        )
    loss = create_kd_loss(name)
    if name == "pairwise":
        return loss, torch.randn(2, 4, 8, 8), torch.randn(2, 6, 8, 8)
    return loss, torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("name", list_kd_losses())
def test_each_loss_is_scalar_zero_on_match_and_grads_student_only(name: str) -> None:
    loss, s, t = _inputs(name)
    s.requires_grad_(True)
    t.requires_grad_(True)
    if name == "holistic":
        value = loss(torch.randn(2, 3, 16, 16), s)
    else:
        value = loss(s, t)
        assert float(loss(t.detach(), t.detach())) == pytest.approx(0.0, abs=1e-6)
    assert value.dim() == 0 and math.isfinite(value.item())
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


# --------------------------------------------------------------------------- pixel


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_pixel_kl_matches_hand_value(temp: float) -> None:
    expected = temp**2 * (_pixel_kl(0, temp) + _pixel_kl(1, temp)) / 2
    value = create_kd_loss("pixel", temperature=temp)(_t(S), _t(T))
    assert float(value) == pytest.approx(expected, rel=1e-12)


def test_pixel_kl_ignore_mask_and_label_map() -> None:
    loss = create_kd_loss("pixel")
    label = torch.tensor([[[3, 255]]])  # pixel 1 ignored
    assert float(loss(_t(S), _t(T), mask=label)) == pytest.approx(_pixel_kl(0, 1.0), rel=1e-12)
    mask = torch.tensor([[[False, True]]])
    assert float(loss(_t(S), _t(T), mask=mask)) == pytest.approx(_pixel_kl(1, 1.0), rel=1e-12)
    # a full-resolution label map (2×4) is sampled to the logits' 1×2 grid by nearest neighbour
    big = torch.tensor([[[0, 0, 255, 255], [0, 0, 255, 255]]])
    assert float(loss(_t(S), _t(T), mask=big)) == pytest.approx(_pixel_kl(0, 1.0), rel=1e-12)
    none = torch.full((1, 1, 2), 255)
    s = _t(S).requires_grad_(True)
    value = loss(s, _t(T), mask=none)
    assert value.item() == 0.0
    value.backward()


def test_pixel_kl_resizes_teacher_to_student() -> None:
    # a spatially constant teacher stays constant under bilinear resizing: KL is the hand value at every pixel
    teacher = torch.tensor([0.5, 1.5], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 4, 8).contiguous()
    student = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 2, 4).contiguous()
    expected = _kl(_softmax([0.5, 1.5]), _softmax([1.0, 0.0]))
    assert float(create_kd_loss("pixel")(student, teacher)) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- pair-wise


def _np_pairwise(fs: np.ndarray, ft: np.ndarray) -> float:
    """Mean over batch and all node pairs of (cos_s − cos_t)², features already at the node grid."""

    def aff(f: np.ndarray) -> np.ndarray:
        v = f.reshape(f.shape[0], f.shape[1], -1)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return np.einsum("bcm,bcn->bmn", v, v)

    return float(((aff(fs) - aff(ft)) ** 2).mean())


def test_pairwise_hand_value_two_nodes() -> None:
    # student nodes (1, 1) and (0, 1): cos = 1/√2; teacher nodes (1, 0, 0) and (1, 0, 1): cos = 1/√2
    fs = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64).view(1, 2, 1, 2)
    ft = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 1.0]], dtype=torch.float64).view(1, 3, 1, 2)
    assert float(create_kd_loss("pairwise", pool=1)(fs, ft)) == pytest.approx(0.0, abs=1e-12)
    # teacher nodes (1, 0, 0) and (0, 1, 0): cos = 0; two off-diagonal pairs of four differ by 1/√2
    ft2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64).view(1, 3, 1, 2)
    expected = 2 * (1 / math.sqrt(2) - 0.0) ** 2 / 4
    assert float(create_kd_loss("pairwise", pool=1)(fs, ft2)) == pytest.approx(expected, rel=1e-7)  # eps 1e-8


def test_pairwise_pools_to_a_common_node_grid() -> None:
    fs = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    ft = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    # pool=2 gives 2×2 student nodes and 4×4 teacher nodes; the teacher is then max-pooled to 2×2
    ns = fs.numpy().reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5))
    nt = ft.numpy().reshape(2, 5, 2, 4, 2, 4).max(axis=(3, 5))
    value = create_kd_loss("pairwise", pool=2)(fs, ft)
    assert float(value) == pytest.approx(_np_pairwise(ns, nt), rel=1e-7)
    grid = create_kd_loss("pairwise", grid=(2, 2))(fs, ft)
    assert float(grid) == pytest.approx(float(value), rel=1e-12)


# --------------------------------------------------------------------------- channel-wise


def test_cwd_matches_hand_value() -> None:
    tau = 4.0
    total = 0.0
    for c in range(2):  # per channel: softmax over the two positions
        p_t = _softmax([T[c][i] / tau for i in range(2)])
        p_s = _softmax([S[c][i] / tau for i in range(2)])
        total += _kl(p_t, p_s)
    expected = tau**2 * total / (1 * 2)
    assert float(create_kd_loss("cwd")(_t(S), _t(T))) == pytest.approx(expected, rel=1e-12)


def test_cwd_rejects_channel_mismatch() -> None:
    with pytest.raises(ValueError, match="connector"):
        create_kd_loss("cwd")(torch.randn(1, 2, 2, 2), torch.randn(1, 3, 2, 2))


# --------------------------------------------------------------------------- feature


def test_feature_mse_and_normalised() -> None:
    fs = torch.tensor([1.0, 2.0], dtype=torch.float64).view(1, 2, 1, 1)
    ft = torch.tensor([0.0, 4.0], dtype=torch.float64).view(1, 2, 1, 1)
    assert float(create_kd_loss("feature")(fs, ft)) == pytest.approx((1 + 4) / 2)
    # unit vectors (1,2)/√5 and (0,1)
    u = (1 / math.sqrt(5), 2 / math.sqrt(5))
    expected = ((u[0] - 0) ** 2 + (u[1] - 1) ** 2) / 2
    assert float(create_kd_loss("feature", normalize=True)(fs, ft)) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="connector"):
        create_kd_loss("feature")(torch.randn(1, 2, 2, 2), torch.randn(1, 3, 2, 2))


# --------------------------------------------------------------------------- holistic


class _LinearCritic(nn.Module):
    """D(I, Q) = Σ w_img·I + Σ w_score·Q per sample, so ∇D = (w_img, w_score) everywhere."""

    def __init__(self, k: int, h: int, w: int):
        super().__init__()
        self.w_img = nn.Parameter(torch.randn(3, h, w, dtype=torch.float64) * 0.3)
        self.w_score = nn.Parameter(torch.randn(k, h, w, dtype=torch.float64) * 0.3)

    def forward(self, image: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        return (image * self.w_img).sum((1, 2, 3)) + (score * self.w_score).sum((1, 2, 3))


def test_gradient_penalty_on_linear_critic() -> None:
    critic = _LinearCritic(2, 2, 3)
    adv = HolisticAdversarial(num_classes=2, discriminator=critic)
    image = torch.randn(4, 3, 2, 3, dtype=torch.float64)
    real = torch.rand(4, 2, 2, 3, dtype=torch.float64)
    fake = torch.rand(4, 2, 2, 3, dtype=torch.float64)
    w = np.concatenate([critic.w_img.detach().numpy().ravel(), critic.w_score.detach().numpy().ravel()])
    norm = float(np.linalg.norm(w))
    gp = adv.gradient_penalty(image, real, fake)
    assert gp.item() == pytest.approx((norm - 1) ** 2, rel=1e-10)  # whatever α
    gp.backward()  # d/dw (‖w‖ − 1)² = 2 (‖w‖ − 1) w / ‖w‖
    grad = np.concatenate([critic.w_img.grad.numpy().ravel(), critic.w_score.grad.numpy().ravel()])
    np.testing.assert_allclose(grad, 2 * (norm - 1) * w / norm, rtol=1e-10)


def test_discriminator_step_wasserstein_and_student_term() -> None:
    adv = create_kd_loss("holistic", num_classes=3, width=8, depth=2, lr=1e-3)
    image = torch.randn(2, 3, 32, 32)
    student = torch.randn(2, 3, 8, 8)
    teacher = torch.randn(2, 3, 16, 16) * 3  # another resolution: resized to the student's
    d_before = {k: v.clone() for k, v in adv.discriminator.state_dict().items()}
    logs = [adv.discriminator_step(image, student, teacher) for _ in range(15)]
    assert set(logs[0]) == {"d_loss", "d_real", "d_fake", "gp", "wasserstein"}
    assert logs[-1]["d_loss"] == pytest.approx(logs[-1]["d_fake"] - logs[-1]["d_real"] + 10 * logs[-1]["gp"])
    assert np.mean([x["d_loss"] for x in logs[-5:]]) < logs[0]["d_loss"]
    assert logs[-1]["wasserstein"] > logs[0]["wasserstein"]
    assert any(not torch.equal(d_before[k], v) for k, v in adv.discriminator.state_dict().items())
    # the student's term: −E[D(Q_s)], gradient to the student only, none to D
    s = student.clone().requires_grad_(True)
    adv.optimizer.zero_grad(set_to_none=True)
    value = adv(image, s)
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is None for p in adv.discriminator.parameters())
    assert all(p.requires_grad for p in adv.discriminator.parameters())


def test_holistic_nan_raises() -> None:
    adv = create_kd_loss("holistic", num_classes=2, width=4, depth=1)
    bad = torch.full((1, 2, 4, 4), float("nan"))
    with pytest.raises(FloatingPointError, match="diverged"):
        adv(torch.randn(1, 3, 4, 4), bad)
    with pytest.raises(FloatingPointError, match="discriminator loss"):
        adv.discriminator_step(torch.randn(1, 3, 4, 4), bad, torch.randn(1, 2, 4, 4))


# --------------------------------------------------------------------------- schedule


def test_loss_schedule_factors() -> None:
    sched = LossSchedule(2.0, warmup_epochs=2, start_epoch=1, stop_epoch=5)
    assert sched.factor(0, 0.9) == 0.0
    assert sched.factor(1, 0.0) == 0.0
    assert sched.factor(1, 0.5) == pytest.approx(0.5)
    assert sched.factor(2, 0.0) == pytest.approx(1.0)
    assert sched.factor(3, 0.0) == pytest.approx(2.0)
    assert sched.factor(4, 1.0) == pytest.approx(2.0)
    assert sched.factor(5, 0.0) == 0.0
    assert LossSchedule(0.7).factor(100) == pytest.approx(0.7)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weight": -1.0},
        {"weight": float("nan")},
        {"weight": 1.0, "warmup_epochs": -1},
        {"weight": 1.0, "start_epoch": -1},
        {"weight": 1.0, "start_epoch": 3, "stop_epoch": 3},
    ],
)
def test_loss_schedule_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LossSchedule(**kwargs)


def test_loss_schedule_rejects_bad_progress() -> None:
    with pytest.raises(ValueError, match="progress"):
        LossSchedule(1.0).factor(0, 1.5)


# --------------------------------------------------------------------------- logit standardisation, DIST


def _zscore(xs: list[float]) -> list[float]:
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
    return [(x - mean) / std for x in xs]


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_logit_std_matches_hand_value(temp: float) -> None:
    loss = create_kd_loss("logit_std", temperature=temp)
    expected = 0.0
    for pixel in range(2):
        zs = _zscore([S[c][pixel] for c in range(2)])
        zt = _zscore([T[c][pixel] for c in range(2)])
        expected += _kl(_softmax([z / temp for z in zt]), _softmax([z / temp for z in zs]))
    assert float(loss(_t(S), _t(T))) == pytest.approx(expected / 2 * temp * temp, rel=1e-6)


def test_logit_std_ignores_the_logits_scale_and_shift() -> None:
    loss = create_kd_loss("logit_std")
    s, t = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    assert float(loss(s, 3.0 * t + 7.0)) == pytest.approx(float(loss(s, t)), rel=1e-5)
    assert float(loss(s, 4.0 * s - 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_dist_matches_hand_value() -> None:
    # 3 classes at 4 pixels (B=1, h=2, w=2); probabilities and Pearson correlations computed by numpy
    rng = np.random.default_rng(3)
    zs, zt = rng.normal(size=(3, 2, 2)), rng.normal(size=(3, 2, 2))
    ps = np.exp(zs) / np.exp(zs).sum(0)
    pt = np.exp(zt) / np.exp(zt).sum(0)
    rows_s, rows_t = ps.reshape(3, 4).T, pt.reshape(3, 4).T  # [pixels, classes]
    inter = 1 - np.mean([np.corrcoef(rows_s[n], rows_t[n])[0, 1] for n in range(4)])
    intra = 1 - np.mean([np.corrcoef(rows_s[:, k], rows_t[:, k])[0, 1] for k in range(3)])
    loss = create_kd_loss("dist", beta=2.0, gamma=0.5)
    value = loss(torch.tensor(zs)[None], torch.tensor(zt)[None])
    assert float(value) == pytest.approx(2.0 * inter + 0.5 * intra, rel=1e-6)


def test_dist_counts_only_valid_pixels() -> None:
    s, t = torch.randn(1, 3, 2, 3, dtype=torch.float64), torch.randn(1, 3, 2, 3, dtype=torch.float64)
    labels = torch.tensor([[[0, 1, 255], [2, 255, 1]]])
    keep = labels[0].reshape(-1) != 255
    loss = create_kd_loss("dist")
    flat_s = s.permute(0, 2, 3, 1).reshape(-1, 3)[keep].t().reshape(1, 3, 1, -1)
    flat_t = t.permute(0, 2, 3, 1).reshape(-1, 3)[keep].t().reshape(1, 3, 1, -1)
    assert float(loss(s, t, labels)) == pytest.approx(float(loss(flat_s, flat_t)), rel=1e-9)
    assert float(loss(s, t, torch.full_like(labels, 255))) == 0.0

"""OKDDip: the ramp-up, the attention, both loss levels against hand-computed values, the peer group's wiring and
gradients, and that the deployable leader is exactly the plain student."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.distill import OKDDipCriterion, PeerAttention, PeerGroup, first_level_loss, leader_of, rampup_weight
from nas.distill import second_level_loss as second_level
from nas.distill.okddip import peer_targets, shared_cells
from search_spaces.builder import build_network, plan_network
from search_spaces.random_arch import random_architecture
from search_spaces.registry import space_spec

K = 3
LN43 = math.log(4 / 3)  # KL(uniform ‖ (3/4, 1/4)) = ½ ln(½ / ¾) + ½ ln(½ / ¼) = ½ ln(4/3)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _arch(seed: int = 0):
    return random_architecture(space_spec("tiny", num_classes=K), np.random.default_rng(seed))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _pixel(z: torch.Tensor, b: int, i: int | None, y: int, x: int) -> list[float]:
    v = z[b, :, y, x] if i is None else z[b, i, :, y, x]
    return [float(c) for c in v]


# --------------------------------------------------------------------------- ramp-up


def test_rampup_follows_the_paper() -> None:
    assert rampup_weight(0, 80) == pytest.approx(math.exp(-5))
    assert rampup_weight(40, 80) == pytest.approx(math.exp(-5 * 0.25))
    assert rampup_weight(60.0, 80) == pytest.approx(math.exp(-5 / 16))
    assert rampup_weight(80, 80) == 1.0 and rampup_weight(300, 80) == 1.0
    assert rampup_weight(0, 0) == 1.0
    with pytest.raises(ValueError, match="ramp-up"):
        rampup_weight(1, -1)
    crit = OKDDipCriterion(weight=2.0, rampup_epochs=4)
    assert crit.factor(1, 0.0) == pytest.approx(2 * math.exp(-5 * 0.75**2))
    assert crit.factor(2, 0.5) == pytest.approx(2 * math.exp(-5 * 0.375**2))


# --------------------------------------------------------------------------- attention


def test_attention_by_hand_and_rows_sum_to_one() -> None:
    att = PeerAttention(8)  # projections to 8 // 8 = 1 channel
    with torch.no_grad():
        att.query.weight.zero_()[0, 0] = 1.0  # q_i = h_i[0]
        att.key.weight.zero_()[0, 1] = 1.0  # k_j = h_j[1]
    h = torch.zeros(1, 2, 8)
    h[0, 0, :2] = torch.tensor([1.0, 2.0])
    h[0, 1, :2] = torch.tensor([3.0, 0.0])
    # q = (1, 3), k = (2, 0): energies q_i k_j = [[2, 0], [6, 0]], softmax over j
    expected = torch.tensor([[_softmax([2.0, 0.0]), _softmax([6.0, 0.0])]])
    torch.testing.assert_close(att(h), expected)

    att = PeerAttention(48)
    assert att.query.out_features == 6 and att.query.bias is None
    alpha = att(torch.randn(5, 4, 48) * 3)
    assert alpha.shape == (5, 4, 4) and bool((alpha >= 0).all())
    torch.testing.assert_close(alpha.sum(-1), torch.ones(5, 4))


def test_group_attention_sums_to_one_per_peer() -> None:
    group = PeerGroup(build_network(_arch()), peers=3).train()
    alpha = group(torch.randn(2, 3, 64, 64))["peer_attention"]
    assert alpha.shape == (2, 3, 3)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 3))


# --------------------------------------------------------------------------- the two loss levels


def test_targets_are_the_attention_weighted_peers() -> None:
    z = torch.randn(2, 3, K, 2, 2, dtype=torch.float64)
    alpha = torch.softmax(torch.randn(2, 3, 3, dtype=torch.float64), -1)
    t = peer_targets(z, alpha)
    for b in range(2):
        for i in range(3):
            torch.testing.assert_close(t[b, i], sum(alpha[b, i, j] * z[b, j] for j in range(3)))
    with pytest.raises(ValueError, match="attention"):
        peer_targets(z, alpha[:, :2])


def test_first_level_closed_forms() -> None:
    temp = 2.0
    a = temp * math.log(3)
    z = torch.tensor([[a, 0.0], [-a, 0.0]], dtype=torch.float64).view(1, 2, 2, 1, 1)  # two peers, two classes
    # uniform attention: both targets are the mean (0, 0) → uniform; σ(z_0/T) = (¾, ¼), σ(z_1/T) = (¼, ¾)
    uniform = torch.full((1, 2, 2), 0.5, dtype=torch.float64)
    assert first_level_loss(z, uniform, temp).item() == pytest.approx(temp**2 * 2 * 0.5 * LN43)
    # each peer attends to itself only: its target is itself
    eye = torch.eye(2, dtype=torch.float64)[None]
    assert first_level_loss(z, eye, temp).item() == pytest.approx(0.0, abs=1e-12)


def test_first_level_by_hand_with_mask() -> None:
    temp = 3.0
    z = torch.randn(2, 3, K, 2, 3, dtype=torch.float64)
    alpha = torch.softmax(torch.randn(2, 3, 3, dtype=torch.float64), -1)
    label = torch.tensor([[[0, 1, 255], [2, 255, 1]], [[1, 1, 1], [0, 0, 255]]])

    def expected(valid) -> float:
        total, n = 0.0, 0
        for b in range(2):
            for y in range(2):
                for x in range(3):
                    if not valid(b, y, x):
                        continue
                    n += 1
                    for i in range(3):
                        t_i = [sum(float(alpha[b, i, j]) * _pixel(z, b, j, y, x)[c] for j in range(3)) for c in range(K)]
                        p = _softmax([v / temp for v in t_i])
                        q = _softmax([v / temp for v in _pixel(z, b, i, y, x)])
                        total += temp**2 * _kl(p, q)
        return total / n

    assert first_level_loss(z, alpha, temp).item() == pytest.approx(expected(lambda b, y, x: True))
    masked = first_level_loss(z, alpha, temp, mask=label)
    assert masked.item() == pytest.approx(expected(lambda b, y, x: int(label[b, y, x]) != 255))
    none = first_level_loss(z.requires_grad_(True), alpha, temp, mask=torch.zeros(2, 2, 3, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad


def test_second_level_closed_form_and_by_hand() -> None:
    temp = 3.0
    a = 1.7
    peers = torch.tensor([[a, -a], [-a, a]], dtype=torch.float64).view(1, 2, 2, 1, 1)  # mean (0, 0): uniform
    leader = torch.tensor([temp * math.log(3), 0.0], dtype=torch.float64).view(1, 2, 1, 1)  # σ(z_L/T) = (¾, ¼)
    assert second_level(peers, leader, temp).item() == pytest.approx(temp**2 * 0.5 * LN43)

    z = torch.randn(2, 4, K, 2, 2, dtype=torch.float64)
    zl = torch.randn(2, K, 2, 2, dtype=torch.float64)
    want = 0.0
    for b in range(2):
        for y in range(2):
            for x in range(2):
                mean = [sum(_pixel(z, b, i, y, x)[c] for i in range(4)) / 4 for c in range(K)]
                want += temp**2 * _kl(_softmax([v / temp for v in mean]), _softmax([v / temp for v in _pixel(zl, b, None, y, x)]))
    assert second_level(z, zl, temp).item() == pytest.approx(want / 8)
    with pytest.raises(ValueError, match="do not match"):
        second_level(z, zl[:, :2], temp)


def test_criterion_total_is_peer_ce_plus_ramped_levels() -> None:
    z = torch.randn(2, 3, K, 4, 4)
    out = {"logits": torch.randn(2, K, 4, 4), "peer_logits": z,
           "peer_attention": torch.softmax(torch.randn(2, 3, 3), -1)}
    label = torch.randint(0, K, (2, 4, 4))
    crit = OKDDipCriterion(temperature=3.0, weight=0.5, rampup_epochs=2.0)
    total, logs = crit(out, label, F.cross_entropy, epoch=1, progress=0.25)
    ce = sum(F.cross_entropy(z[:, i], label) for i in range(3))
    l1 = first_level_loss(z, out["peer_attention"], 3.0)
    l2 = second_level(z, out["logits"], 3.0)
    w = 0.5 * math.exp(-5 * (1 - 1.25 / 2) ** 2)
    assert total.item() == pytest.approx((ce + w * (l1 + l2)).item(), rel=1e-6)
    assert logs["okd_weight"] == pytest.approx(w)
    assert logs["okd_l1"] == pytest.approx(l1.item(), rel=1e-6) and logs["okd_l2"] == pytest.approx(l2.item(), rel=1e-6)
    with pytest.raises(ValueError, match="peer_attention"):
        crit({"logits": out["logits"], "peer_logits": z}, label, F.cross_entropy)


# --------------------------------------------------------------------------- the peer group


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_shared_cells_are_closed_and_peers_own_the_rest(seed: int, share: float) -> None:
    arch = _arch(seed)
    plan = plan_network(arch)
    shared = shared_cells(arch, share)
    for j in shared:  # every input of a shared cell is the stem or another shared cell
        assert plan.cells[j].source == 0 or plan.cells[j].source - 1 in shared
    if share == 0.0:
        assert shared == frozenset()
    if share == 1.0:
        assert shared == frozenset(range(len(plan.cells)))
    group = PeerGroup(build_network(arch), peers=2, share=share)
    plain = build_network(arch)
    assert _count(group.leader) == _count(plain)
    peer = group.peers[0]
    assert sorted(peer.owned) == sorted(set(range(len(plan.cells))) - shared)
    own_cells = sum(_count(plain.cells[j]) for j in peer.owned)
    heads = _count(plain) - _count(plain.stem) - _count(plain.cells) - _count(plain.aux)
    assert _count(peer) == own_cells + heads  # no stem, no shared cell, no auxiliary head


def test_bad_group_settings() -> None:
    with pytest.raises(ValueError, match="at least 2 peers"):
        PeerGroup(build_network(_arch()), peers=1)
    with pytest.raises(ValueError, match=r"share must be in \[0, 1\]"):
        PeerGroup(build_network(_arch()), share=1.5)
    with pytest.raises(ValueError, match="temperature"):
        OKDDipCriterion(temperature=0.0)


def test_leader_outputs_equal_the_plain_student_and_eval_runs_the_leader_only() -> None:
    arch = _arch()
    group = PeerGroup(build_network(arch), peers=2)
    plain = build_network(arch)
    plain.load_state_dict(group.leader.state_dict())
    x = torch.randn(2, 3, 64, 64)
    group.train(), plain.train()
    out, ref = group(x), plain(x)
    assert set(out) == set(ref) | {"peer_logits", "peer_attention"}
    for k in ref:
        torch.testing.assert_close(out[k], ref[k])
    assert out["peer_logits"].shape == (2, 2, K, 64, 64)
    group.eval(), plain.eval()
    out, ref = group(x), plain(x)
    assert set(out) == set(ref)
    torch.testing.assert_close(out["logits"], ref["logits"])
    assert leader_of(group) is group.leader and leader_of(plain) is plain


def test_gradients_reach_leader_peers_and_attention() -> None:
    arch = _arch()
    group = PeerGroup(build_network(arch), peers=3, share=0.5).train()
    x, label = torch.randn(2, 3, 64, 64), torch.randint(0, K, (2, 64, 64))
    with_params = {j for j, cell in enumerate(group.leader.cells) if _count(cell) > 0}
    shared = sorted(group.shared & with_params)
    owned = sorted(set(group.peers[0].owned) & with_params)
    assert shared and owned

    def grads(loss: torch.Tensor) -> dict[str, float]:
        group.zero_grad(set_to_none=True)
        loss.backward()
        return {n: float(p.grad.abs().sum()) if p.grad is not None else 0.0 for n, p in group.named_parameters()}

    def total(g: dict[str, float], prefix: str) -> float:
        return sum(v for n, v in g.items() if n.startswith(prefix))

    out = group(x)
    l1 = first_level_loss(out["peer_logits"], out["peer_attention"], 3.0)
    g = grads(l1)  # the targets carry gradient: the attention learns from L1
    assert total(g, "attention.query.") > 0 and total(g, "attention.key.") > 0
    for i in range(3):
        assert total(g, f"peers.{i}.net.head.") > 0
    assert total(g, "leader.head.") == 0.0  # L1 is among the peers
    assert total(g, f"leader.cells.{shared[0]}.") > 0  # ... whose shared cells are the leader's

    out = group(x)
    g = grads(second_level(out["peer_logits"], out["logits"], 3.0))
    assert total(g, "leader.head.") > 0 and total(g, f"leader.cells.{owned[-1]}.") > 0
    for i in range(3):
        assert total(g, f"peers.{i}.net.cells.{owned[0]}.") > 0  # the ensemble's gradient reaches the peers

    out = group(x)
    okd, _ = OKDDipCriterion(rampup_epochs=0.0)(out, label, F.cross_entropy)
    g = grads(F.cross_entropy(out["logits"], label) + okd)
    for prefix in ("leader.stem.", "leader.head.", "attention.", *(f"peers.{i}." for i in range(3))):
        assert total(g, prefix) > 0, prefix
    assert all(not n.startswith(("peers.0.net.stem", f"peers.0.net.cells.{shared[0]}.")) for n in g)

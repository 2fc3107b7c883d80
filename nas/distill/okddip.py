"""Online knowledge distillation with diverse peers (OKDDip, Chen et al., AAAI 2020): KD without a trained teacher.

The student (the *group leader*, the only network kept for inference) trains together with m − 1 auxiliary
*peers*. Each peer shares the leader's stem and the leading cells of every branch (``share`` of each branch's
cells) and owns copies of the later cells and of the whole head, initialised on its own; the shared part runs
once per forward pass. Two levels of distillation, as in the paper (§3) and the authors' code
(DefangChen/OKDDip, ``train_GL.py``, ``models/model_cifar/resnet_GL.py``):

* **attention-based targets**: peer i's head feature ``feat8`` is averaged over positions to h_i `[B, C]`;
  q_i = W_q h_i and k_i = W_k h_i (two bias-free linear maps to C/8, shared by the peers);
  α_ij = softmax_j(q_iᵀ k_j) `[B, m−1, m−1]`, one set of weights per peer and image; peer i's target is the
  per-pixel weighted ensemble t_i = Σ_j α_ij z_j (paper eqs. 1–3);
* **first level**: L1 = Σ_i T²·KL(σ(t_i/T) ‖ σ(z_i/T)) (eq. 4);
* **second level**: L2 = T²·KL(σ(z̄/T) ‖ σ(z_L/T)) with z̄ = mean_i z_i, the peers' ensemble teaching the leader
  (eq. 5);
* **total**: Σ_i CE(z_i) + CE(z_L) + w(e)·weight·(L1 + L2), T = 3, weight = 1 and the ramp-up
  w(e) = exp(−5(1 − e/E_r)²) for e < E_r, 1 after (eq. 6; E_r = 80 of the paper's 300 epochs).

z are per-pixel logits `[B, K, H, W]`; each KL is summed over classes and averaged over the valid pixels
(batch-mean per pixel, as for pixel-wise KD). As in the authors' code the targets t_i and z̄ are not detached:
gradients of L1 reach W_q and W_k (the only way the attention learns) and those of L2 reach the peers too.

:class:`PeerGroup` wraps the leader for training (its state dict holds the leader under ``leader.``, the peers
and the attention); :func:`leader_of` returns the deployable network. :class:`OKDDipCriterion` adds the peers'
cross-entropy and the weighted two levels to the leader's own loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nas.distill.losses import _valid_pixels
from search_spaces.arch import Architecture
from search_spaces.builder import SegNet, plan_network

__all__ = [
    "OKDDIP_RAMPUP_SHARE",
    "rampup_weight",
    "shared_cells",
    "peer_targets",
    "first_level_loss",
    "second_level_loss",
    "PeerAttention",
    "PeerGroup",
    "OKDDipCriterion",
    "leader_of",
]

OKDDIP_RAMPUP_SHARE = 80 / 300  # the paper's ramp-up: E_r = 80 of 300 training epochs


def rampup_weight(epoch: float, rampup_epochs: float) -> float:
    """w(e) = exp(−5(1 − e/E_r)²) for e < E_r, else 1 (OKDDip eq. 6; Laine & Aila's sigmoid ramp-up);
    `epoch` may be fractional, `rampup_epochs` = 0 means no ramp."""
    if rampup_epochs < 0 or epoch < 0:
        raise ValueError(f"ramp-up needs epoch >= 0 and rampup_epochs >= 0 but got {epoch}, {rampup_epochs}.")
    if rampup_epochs == 0 or epoch >= rampup_epochs:
        return 1.0
    return math.exp(-5.0 * (1.0 - epoch / rampup_epochs) ** 2)


def shared_cells(arch: Architecture, share: float) -> frozenset[int]:
    """Indices of the unique cells (:func:`~search_spaces.builder.plan_network` order) the peers share with the
    leader: the first ⌊share·n_b⌋ cells of every branch b (n_b cells). Closed under inputs, since a cell's
    input is the previous cell of the same branch."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"OKDDip share must be in [0, 1] but got {share}.")
    plan = plan_network(arch)
    shared: set[int] = set()
    for branch, bplan in zip(arch.branches, plan.branches):
        n = math.floor(share * len(branch.cells) + 1e-9)
        shared.update(f - 1 for f in bplan.feats[:n])  # feature index j + 1 is the output of cell j
    return frozenset(shared)


def _check_stack(peer_logits: torch.Tensor, what: str) -> None:
    if peer_logits.dim() != 5:
        raise ValueError(f"{what}: peer logits must be [B, m, K, H, W] but got shape {list(peer_logits.shape)}.")


def peer_targets(peer_logits: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """t_i = Σ_j α_ij z_j per pixel (OKDDip eq. 3): logits `[B, m, K, H, W]`, attention `[B, m, m]` → `[B, m, K, H, W]`."""
    _check_stack(peer_logits, "OKDDip targets")
    b, m = peer_logits.shape[:2]
    if tuple(attention.shape) != (b, m, m):
        raise ValueError(f"OKDDip targets: attention must be [{b}, {m}, {m}] but got {list(attention.shape)}.")
    return torch.einsum("bij,bjkhw->bikhw", attention.to(peer_logits.dtype), peer_logits)


def _pixel_kl(target: torch.Tensor, student: torch.Tensor, temperature: float, mask: torch.Tensor | None,
              ignore_index: int) -> torch.Tensor:
    """T² · mean over valid pixels of Σ_c p (log p − log q), p = σ(target/T), q = σ(student/T) over the class
    dim −3; `[..., K, H, W]` inputs with leading dims `[B]` or `[B, m]` (summed over m)."""
    t = temperature
    log_p = F.log_softmax(target / t, dim=-3)
    log_q = F.log_softmax(student / t, dim=-3)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-3)  # [B, H, W] or [B, m, H, W]
    if kl.dim() == 4:
        kl = kl.sum(dim=1)
    if mask is None:
        return kl.mean() * t * t
    valid = _valid_pixels(mask, student.shape[-2:], ignore_index).to(kl.device)
    if valid.shape != kl.shape:
        raise ValueError(f"OKDDip: mask {list(valid.shape)} does not match the logits' pixels {list(kl.shape)}.")
    n = valid.sum()
    if int(n) == 0:
        return student.sum() * 0.0
    return torch.where(valid, kl, torch.zeros_like(kl)).sum() / n * t * t


def first_level_loss(peer_logits: torch.Tensor, attention: torch.Tensor, temperature: float = 3.0,
                     mask: torch.Tensor | None = None, ignore_index: int = 255) -> torch.Tensor:
    """L1 = Σ_i T²·KL(σ(t_i/T) ‖ σ(z_i/T)), t = :func:`peer_targets` (OKDDip eq. 4), each KL a mean over valid
    pixels; logits `[B, m, K, H, W]`, attention `[B, m, m]`, `mask` a bool or label map `[B, H', W']`."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive but got {temperature}.")
    return _pixel_kl(peer_targets(peer_logits, attention), peer_logits, temperature, mask, ignore_index)


def second_level_loss(peer_logits: torch.Tensor, leader_logits: torch.Tensor, temperature: float = 3.0,
                      mask: torch.Tensor | None = None, ignore_index: int = 255) -> torch.Tensor:
    """L2 = T²·KL(σ(mean_i z_i / T) ‖ σ(z_L/T)) (OKDDip eq. 5), a mean over valid pixels; peer logits
    `[B, m, K, H, W]`, leader logits `[B, K, H, W]`."""
    _check_stack(peer_logits, "OKDDip second level")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive but got {temperature}.")
    if peer_logits.shape[:1] + peer_logits.shape[2:] != leader_logits.shape:
        raise ValueError(f"OKDDip second level: leader logits {list(leader_logits.shape)} do not match the peers' "
                         f"{list(peer_logits.shape)}.")
    return _pixel_kl(peer_logits.mean(dim=1), leader_logits, temperature, mask, ignore_index)


class PeerAttention(nn.Module):
    """α = softmax_j(q_iᵀ k_j) with q = W_q h, k = W_k h (OKDDip eqs. 1–2): pooled peer features `[B, m, C]` →
    attention `[B, m, m]`, each row summing to one; W_q, W_k bias-free to C/`factor` (at least 1) channels."""

    def __init__(self, channels: int, factor: int = 8):
        super().__init__()
        if channels < 1 or factor < 1:
            raise ValueError(f"peer attention needs channels >= 1 and factor >= 1 but got {channels}, {factor}.")
        dim = max(1, channels // factor)
        self.query = nn.Linear(channels, dim, bias=False)
        self.key = nn.Linear(channels, dim, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() != 3:
            raise ValueError(f"peer attention: features must be [B, m, C] but got shape {list(h.shape)}.")
        energy = self.query(h) @ self.key(h).transpose(1, 2)  # [B, m, m]
        return F.softmax(energy, dim=-1)


class _Peer(nn.Module):
    """One auxiliary peer: the leader's architecture without its stem and shared cells (random initialisation)."""

    def __init__(self, arch: Architecture, shared: frozenset[int]):
        super().__init__()
        net = SegNet(arch, aux_heads=False)
        net.stem = nn.Identity()
        for j in shared:
            net.cells[j] = nn.Identity()
        self.net = net
        self.owned = [j for j in range(len(net.cells)) if j not in shared]

    def forward(self, feats: list[torch.Tensor], size: list[int]) -> dict[str, torch.Tensor]:
        """The leader's features (stem and cells, see :meth:`SegNet.features`) → this peer's named outputs."""
        own = list(feats)
        for j in self.owned:  # cells are in dependency order: an input is shared or already recomputed
            own[j + 1] = self.net.cells[j](own[self.net.sources[j]])
        return self.net.decode(own, size)


class PeerGroup(nn.Module):
    """The leader (a :class:`SegNet`) plus `peers` auxiliary peers sharing its stem and the first `share` of each
    branch's cells, and the peers' attention.

    Training mode: ``forward(x [B, 3, H, W])`` returns the leader's outputs (``logits``, ``logits8``, ``feat8``,
    ``aux*``) plus ``peer_logits`` `[B, m, K, H, W]` and ``peer_attention`` `[B, m, m]`. Eval mode: the
    leader's outputs only (the peers do not run).
    """

    def __init__(self, leader: SegNet, peers: int = 3, share: float = 0.5):
        super().__init__()
        if peers < 2:
            raise ValueError(f"OKDDip needs at least 2 peers but got {peers}.")
        self.leader = leader
        self.shared = shared_cells(leader.arch, share)
        self.peers = nn.ModuleList(_Peer(leader.arch, self.shared) for _ in range(peers))
        self.attention = PeerAttention(leader.plan.head_channels * len(leader.plan.branches))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.training:
            return self.leader(x)
        size = [x.shape[2], x.shape[3]]
        feats = self.leader.features(x)
        out = dict(self.leader.decode(feats, size))
        peer_out = [peer(feats, size) for peer in self.peers]
        out["peer_logits"] = torch.stack([p["logits"] for p in peer_out], dim=1)
        pooled = torch.stack([p["feat8"].mean(dim=(2, 3)) for p in peer_out], dim=1)  # h_i, [B, m, C]
        out["peer_attention"] = self.attention(pooled)
        return out


def leader_of(model: nn.Module) -> nn.Module:
    """The deployable network: a :class:`PeerGroup`'s leader, any other model as it is."""
    return model.leader if isinstance(model, PeerGroup) else model


class OKDDipCriterion(nn.Module):
    """The peers' side of the OKDDip objective: Σ_i CE(z_i) + weight·w(e)·(L1 + L2) (the leader's CE is the
    trainer's own). `rampup_epochs` is E_r of :func:`rampup_weight`.

    ``forward(out, label, ce, *, epoch, progress)``: `out` as :class:`PeerGroup` returns it in training mode,
    `label` `[B, H, W]` (255 = ignore, also excluded from the KL terms), `ce(logits, label)` the trainer's
    cross-entropy; returns ``(total, logs)`` with `logs` the unweighted parts and the weight as floats.
    """

    def __init__(self, temperature: float = 3.0, weight: float = 1.0, rampup_epochs: float = 80.0,
                 ignore_index: int = 255):
        super().__init__()
        if not temperature > 0 or not math.isfinite(weight) or weight < 0 or rampup_epochs < 0:
            raise ValueError("OKDDip needs temperature > 0, a finite weight >= 0 and rampup_epochs >= 0 but got "
                             f"{temperature}, {weight}, {rampup_epochs}.")
        self.temperature, self.weight = float(temperature), float(weight)
        self.rampup_epochs, self.ignore_index = float(rampup_epochs), ignore_index

    def factor(self, epoch: int, progress: float = 0.0) -> float:
        """weight · w(epoch + progress)."""
        return self.weight * rampup_weight(epoch + progress, self.rampup_epochs)

    def forward(self, out: Mapping[str, torch.Tensor], label: torch.Tensor,
                ce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, epoch: int = 0,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
        for key in ("logits", "peer_logits", "peer_attention"):
            if key not in out:
                raise ValueError(f"OKDDip reads output '{key}' but the model provides {sorted(out)}.")
        z, alpha, leader = out["peer_logits"], out["peer_attention"], out["logits"]
        peer_ce = sum((ce(z[:, i], label) for i in range(z.shape[1])), torch.zeros((), device=z.device))
        l1 = first_level_loss(z, alpha, self.temperature, label, self.ignore_index)
        l2 = second_level_loss(z, leader, self.temperature, label, self.ignore_index)
        factor = self.factor(epoch, progress)
        total = peer_ce + factor * (l1 + l2)
        logs = {"loss_peers": peer_ce.item(), "okd_l1": l1.item(), "okd_l2": l2.item(), "okd_weight": factor}
        return total, logs

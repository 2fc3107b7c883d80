"""Knowledge-distillation losses for dense prediction, registered by name.

`@register_kd_loss(name)` fills the registry, `create_kd_loss(name, **kw)` builds a loss, `KD_LOSSES` is a
read-only view name → class. Every loss returns a scalar tensor and carries no weight of its own: weights and
schedules belong to the composer (:mod:`nas.distill.compose`). Teacher tensors are detached inside each loss,
so gradients reach the student only.

Each loss class says what its `forward` reads in the class attribute ``reads`` (``"student"``, ``"teacher"``,
``"mask"``, ``"image"``, in the order of the positional arguments) and whether its student input must first go
through a :class:`~nas.distill.connectors.Connector` (``needs_connector``); the composer relies on both.

Shapes: logits and features are `[B, C, H, W]`; masks and labels `[B, H, W]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nas.losses import check_finite
from nas.registry import Registry
from search_spaces.upsample import resize

__all__ = [
    "KD_LOSSES",
    "KDLoss",
    "register_kd_loss",
    "create_kd_loss",
    "list_kd_losses",
    "PixelKL",
    "StandardisedPixelKL",
    "DIST",
    "PairwiseAffinity",
    "ChannelWiseDivergence",
    "FeatureMimic",
    "ScoreDiscriminator",
    "HolisticAdversarial",
]

KD_LOSSES: Registry[type[KDLoss]] = Registry("KD loss")  # read-only mapping: registered name → loss class


class KDLoss(nn.Module):
    """Base of the registered losses: declares the inputs `forward` reads and whether it needs a connector."""

    reads: ClassVar[tuple[str, ...]] = ("student", "teacher")
    needs_connector: ClassVar[bool] = False


def register_kd_loss(name: str) -> Callable[[type[KDLoss]], type[KDLoss]]:
    """Class decorator adding a :class:`KDLoss` subclass to the registry under `name`; a duplicate name raises."""

    def deco(cls: type[KDLoss]) -> type[KDLoss]:
        if not (isinstance(cls, type) and issubclass(cls, KDLoss)):
            raise ValueError(f"KD loss '{name}' must be a KDLoss subclass but got {cls!r}.")
        return KD_LOSSES.add(name, cls)

    return deco


def list_kd_losses() -> tuple[str, ...]:
    """Registered KD loss names, in registration order."""
    return KD_LOSSES.names()


def create_kd_loss(name: str, **kwargs: Any) -> KDLoss:
    """Build the registered loss `name` with keyword arguments `kwargs`; unknown names and arguments raise."""
    cls = KD_LOSSES[name]
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"KD loss '{name}': bad arguments {sorted(kwargs)}: {exc}") from None


# --------------------------------------------------------------------------- helpers


def _check_4d(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{what} must be [B, C, H, W] but got shape {list(x.shape)}.")


def _match_logits(student: torch.Tensor, teacher: torch.Tensor, what: str) -> torch.Tensor:
    """The teacher tensor detached and resized to the student's H×W; batch and channels must agree."""
    _check_4d(student, f"{what}: student input")
    _check_4d(teacher, f"{what}: teacher input")
    if student.shape[:2] != teacher.shape[:2]:
        raise ValueError(
            f"{what}: student {list(student.shape)} and teacher {list(teacher.shape)} differ in batch or "
            "channels; route the student through a connector."
        )
    return resize(teacher.detach(), student.shape[-2:])


def _valid_pixels(mask: torch.Tensor, size: torch.Size, ignore_index: int) -> torch.Tensor:
    """Bool `[B, h, w]` of the pixels that count, from a bool mask or an integer label map `[B, H, W]`.

    An integer map counts pixels whose label is not `ignore_index`; a map at another resolution is resized
    by nearest-neighbour sampling to `size`.
    """
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"mask must be [B, H, W] but got shape {list(mask.shape)}.")
    valid = mask if mask.dtype == torch.bool else mask != ignore_index
    if tuple(valid.shape[-2:]) != tuple(size):
        valid = F.interpolate(valid[:, None].float(), size=tuple(size), mode="nearest")[:, 0] > 0.5
    return valid


# --------------------------------------------------------------------------- pixel-wise


@register_kd_loss("pixel")
class PixelKL(KDLoss):
    """Pixel-wise distillation (Hinton et al., 2015, eq. 1 applied per pixel; Liu et al., Structured KD,
    CVPR 2019, eq. 1):

        L = T² · (1/|P|) Σ_{p∈P} Σ_c q^t_{p,c} (log q^t_{p,c} − log q^s_{p,c}),  q = softmax(z / T) over classes,

    i.e. KL(q^t ‖ q^s) summed over classes and averaged over the valid pixels P of the whole batch
    ("batch-mean per pixel", not PyTorch's element-mean, which would divide by C too).

    ``forward(student_logits [B, K, h, w], teacher_logits [B, K, H, W], mask=None)``: teacher logits at another
    resolution are bilinearly resized to the student's. `mask` is a bool `[B, H', W']` map of pixels that count,
    or an integer label map whose ``ignore_index`` pixels (255) are excluded; it is resized by nearest-neighbour
    sampling to the student's h×w. With no valid pixel the loss is 0 (still connected to the graph).
    """

    reads = ("student", "teacher", "mask")

    def __init__(self, temperature: float = 1.0, ignore_index: int = 255):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive but got {temperature}.")
        self.temperature, self.ignore_index = float(temperature), ignore_index

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        teacher = _match_logits(student_logits, teacher_logits, "pixel KD")
        t = self.temperature
        log_q_s = F.log_softmax(student_logits / t, dim=1)
        log_q_t = F.log_softmax(teacher / t, dim=1)
        kl = (log_q_t.exp() * (log_q_t - log_q_s)).sum(dim=1)  # [B, h, w]
        if mask is None:
            return kl.mean() * t * t
        valid = _valid_pixels(mask, student_logits.shape[-2:], self.ignore_index).to(kl.device)
        if valid.shape != kl.shape:
            raise ValueError(
                f"pixel KD: mask batch {list(valid.shape)} does not match logits {list(kl.shape)}."
            )
        n = valid.sum()
        if int(n) == 0:
            return student_logits.sum() * 0.0
        return torch.where(valid, kl, torch.zeros_like(kl)).sum() / n * t * t


def _standardise(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score every pixel's logits over the classes: (z − mean_c z) / std_c z, `[B, K, H, W]` → same."""
    mean = logits.mean(dim=1, keepdim=True)
    std = logits.std(dim=1, keepdim=True, unbiased=False)
    return (logits - mean) / (std + eps)


@register_kd_loss("logit_std")
class StandardisedPixelKL(PixelKL):
    """Pixel-wise KD on standardised logits (Sun et al., "Logit Standardization in Knowledge Distillation",
    CVPR 2024): both models' logits are z-scored per pixel over the classes before the softened KL of
    :class:`PixelKL`, so the student matches the teacher's *relations* between classes rather than its logit
    range, which a much smaller student cannot reach. Same inputs and masking as ``pixel``; the paper pairs it
    with a higher temperature (2 here by default)."""

    def __init__(self, temperature: float = 2.0, ignore_index: int = 255):
        super().__init__(temperature, ignore_index)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_4d(student_logits, "logit-standardised KD: student input")
        _check_4d(teacher_logits, "logit-standardised KD: teacher input")
        return super().forward(_standardise(student_logits), _standardise(teacher_logits.detach()), mask)


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of `a` with the same row of `b`, `[N, M]` × `[N, M]` → `[N]`."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@register_kd_loss("dist")
class DIST(KDLoss):
    """DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022), for dense prediction:
    every valid pixel's softened class probabilities p = softmax(z / T) form the rows of an `[N, K]` matrix
    (N = valid pixels of the batch), and

        L = T² · (β · (1 − mean_n ρ(p^s_n, p^t_n)) + γ · (1 − mean_k ρ(p^s_{·k}, p^t_{·k}))),

    ρ = Pearson correlation: the inter-class term matches each pixel's ranking of the classes, the intra-class
    term each class's ranking of the pixels. Correlation, unlike KL, ignores the scale and shift of the
    teacher's probabilities, which is what lets a small student learn from a much stronger teacher.

    ``forward(student_logits [B, K, h, w], teacher_logits [B, K, H, W], mask=None)``: teacher resized to the
    student's size, mask as in :class:`PixelKL`; with fewer than two valid pixels the loss is 0.
    """

    reads = ("student", "teacher", "mask")

    def __init__(self, temperature: float = 1.0, beta: float = 1.0, gamma: float = 1.0, ignore_index: int = 255):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive but got {temperature}.")
        if beta < 0 or gamma < 0:
            raise ValueError(f"beta and gamma must be non-negative but got {beta} and {gamma}.")
        self.temperature, self.beta, self.gamma = float(temperature), float(beta), float(gamma)
        self.ignore_index = ignore_index

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        teacher = _match_logits(student_logits, teacher_logits, "DIST")
        t, k = self.temperature, student_logits.shape[1]
        p_s = F.softmax(student_logits / t, dim=1).permute(0, 2, 3, 1).reshape(-1, k)  # [B·h·w, K]
        p_t = F.softmax(teacher / t, dim=1).permute(0, 2, 3, 1).reshape(-1, k)
        if mask is not None:
            valid = _valid_pixels(mask, student_logits.shape[-2:], self.ignore_index).to(p_s.device).reshape(-1)
            if valid.numel() != p_s.shape[0]:
                raise ValueError(f"DIST: mask {list(mask.shape)} does not match logits {list(student_logits.shape)}.")
            p_s, p_t = p_s[valid], p_t[valid]
        if p_s.shape[0] < 2:
            return student_logits.sum() * 0.0
        inter = 1.0 - _pearson_rows(p_s, p_t).mean()
        intra = 1.0 - _pearson_rows(p_s.t(), p_t.t()).mean()
        return (self.beta * inter + self.gamma * intra) * t * t


# --------------------------------------------------------------------------- pair-wise


@register_kd_loss("pairwise")
class PairwiseAffinity(KDLoss):
    """Pair-wise affinity distillation (Liu et al., Structured KD, CVPR 2019, eq. 2; TPAMI 2020):

        a_ij = f_iᵀ f_j / (‖f_i‖ ‖f_j‖),   L = (1 / (B·N²)) Σ_b Σ_{i,j} (a^s_ij − a^t_ij)²,

    over the N nodes of a node grid, all ordered pairs i, j including i = j, as in the authors' code
    (`sim_dis_compute`). Nodes are max-pooled cells of the feature maps: with ``grid=(gh, gw)`` both maps are
    adaptively max-pooled to that grid; otherwise with kernel = stride = ``pool`` (ceil mode), after which a finer
    grid is adaptively max-pooled to the coarser one so both models share one node grid. Similarities are
    computed within each model, so the channel counts may differ.

    ``forward(student_feat [B, Cs, hs, ws], teacher_feat [B, Ct, ht, wt])``.
    """

    def __init__(self, pool: int | None = 2, grid: tuple[int, int] | None = None, eps: float = 1e-8):
        super().__init__()
        if pool is not None and pool < 1:
            raise ValueError(f"pool must be >= 1 but got {pool}.")
        if grid is not None and (len(grid) != 2 or min(grid) < 1):
            raise ValueError(f"grid must be two positive ints (gh, gw) but got {grid}.")
        self.pool, self.grid, self.eps = pool, (tuple(grid) if grid is not None else None), eps

    def _nodes(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid is not None:
            return F.adaptive_max_pool2d(x, self.grid)
        if self.pool is not None and self.pool > 1:
            return F.max_pool2d(x, kernel_size=self.pool, stride=self.pool, ceil_mode=True)
        return x

    def _affinity(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(2)  # [B, C, N]
        f = f / (f.norm(dim=1, keepdim=True) + self.eps)
        return f.transpose(1, 2) @ f  # [B, N, N]

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        _check_4d(student_feat, "pairwise KD: student input")
        _check_4d(teacher_feat, "pairwise KD: teacher input")
        if student_feat.shape[0] != teacher_feat.shape[0]:
            raise ValueError(
                f"pairwise KD: batch sizes differ: {student_feat.shape[0]} vs {teacher_feat.shape[0]}."
            )
        s, t = self._nodes(student_feat), self._nodes(teacher_feat.detach())
        if s.shape[-2:] != t.shape[-2:]:
            common = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
            s, t = F.adaptive_max_pool2d(s, common), F.adaptive_max_pool2d(t, common)
        return (self._affinity(s) - self._affinity(t)).pow(2).mean()


# --------------------------------------------------------------------------- channel-wise


@register_kd_loss("cwd")
class ChannelWiseDivergence(KDLoss):
    """Channel-wise distillation (Shu et al., ICCV 2021, eqs. 2–3; mmrazor's `ChannelWiseDivergence`):

        φ(y_c)_i = softmax_i(y_{c,i} / T) over the H·W positions i of channel c,
        L = T² / (B·C) · Σ_b Σ_c Σ_i φ(y^t_c)_i (log φ(y^t_c)_i − log φ(y^s_c)_i),

    i.e. KL(teacher ‖ student) of each channel's spatial distribution, summed over positions, averaged over
    channels and batch, times T²; T = 4 by default (the authors' value for logits).

    ``forward(student [B, C, h, w], teacher [B, C, H, W])``: the channel counts must match (use a connector for
    features); a teacher at another resolution is bilinearly resized to the student's.
    """

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive but got {temperature}.")
        self.temperature = float(temperature)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        teacher = _match_logits(student, teacher, "channel-wise KD")
        t = self.temperature
        b, c = student.shape[:2]
        log_p_s = F.log_softmax(student.flatten(2) / t, dim=2)
        log_p_t = F.log_softmax(teacher.flatten(2) / t, dim=2)
        return (log_p_t.exp() * (log_p_t - log_p_s)).sum() * (t * t) / (b * c)


# --------------------------------------------------------------------------- feature mimicking


@register_kd_loss("feature")
class FeatureMimic(KDLoss):
    """Feature mimicking through a connector (FitNets, Romero et al., ICLR 2015, eq. 2, with a 1×1 regressor):

        L = mean over B·C·H·W of (r(f^s) − f^t)²,

    where r is the connector the composer applies before this loss. With ``normalize=True`` each position's
    channel vector of both maps is first L2-normalised (so L = mean of squared differences of unit vectors).

    ``forward(student_feat [B, C, H, W], teacher_feat [B, C, H, W])``: shapes must match exactly.
    """

    needs_connector = True

    def __init__(self, normalize: bool = False):
        super().__init__()
        self.normalize = normalize

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        _check_4d(student_feat, "feature KD: student input")
        teacher_feat = teacher_feat.detach()
        if student_feat.shape != teacher_feat.shape:
            raise ValueError(
                f"feature KD: student {list(student_feat.shape)} and teacher {list(teacher_feat.shape)} "
                "differ; route the student through a connector."
            )
        if self.normalize:
            student_feat, teacher_feat = F.normalize(student_feat, dim=1), F.normalize(teacher_feat, dim=1)
        return F.mse_loss(student_feat, teacher_feat)


# --------------------------------------------------------------------------- holistic adversarial


class ScoreDiscriminator(nn.Module):
    """The critic D of holistic distillation (Liu et al., Structured KD, CVPR 2019, §3.2).

    ``forward(image [B, 3, H, W], score [B, K, h, w]) → [B]``: the image is bilinearly resized to h×w and
    concatenated with the score map (class probabilities), then `depth` spectral-normalised 3×3 stride-2 convs
    with LeakyReLU(0.1) (widths `width`·2^i), a 3×3 conv to one channel and a spatial mean. No BatchNorm, as
    WGAN-GP requires (the penalty is per sample). The authors' critic is a SAGAN-style net with self-attention;
    this one is smaller.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: int = 64,
        depth: int = 3,
        spectral_norm: bool = True,
    ):
        super().__init__()
        if num_classes < 1 or in_channels < 0 or width < 1 or depth < 1:
            raise ValueError(
                f"bad discriminator size: num_classes={num_classes}, in_channels={in_channels}, "
                f"width={width}, depth={depth}."
            )

        def conv(c_in: int, c_out: int, stride: int) -> nn.Module:
            layer = nn.Conv2d(c_in, c_out, 3, stride, 1)
            return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer

        layers: list[nn.Module] = []
        c = in_channels + num_classes
        for i in range(depth):
            layers += [conv(c, width * 2**i, 2), nn.LeakyReLU(0.1)]
            c = width * 2**i
        layers.append(conv(c, 1, 1))
        self.net = nn.Sequential(*layers)
        self.num_classes, self.in_channels = num_classes, in_channels

    def forward(self, image: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        image = resize(image, score.shape[-2:])
        return self.net(torch.cat([image, score], dim=1)).mean(dim=(1, 2, 3))


@register_kd_loss("holistic")
class HolisticAdversarial(KDLoss):
    """Holistic distillation (Liu et al., Structured KD, CVPR 2019, eq. 3) as a Wasserstein GAN with gradient
    penalty (Gulrajani et al., NeurIPS 2017, eq. 3).

    A critic D scores (image, score map) pairs; the teacher's softmax Q_t is "real", the student's Q_s "fake".

    * ``discriminator_step(image, student_logits, teacher_logits)`` updates D with its own optimiser on
      ``L_D = E[D(Q_s)] − E[D(Q_t)] + λ_gp · E[(‖∇_x̂ D(x̂)‖₂ − 1)²]``, x̂ = α·(I, Q_t) + (1 − α)·(I, Q_s),
      α ~ U(0, 1) per sample, the gradient taken over the whole critic input (image and score), λ_gp = 10;
    * ``forward(image, student_logits)`` returns the student's term ``−E[D(Q_s)]``; D's parameters receive no
      gradient from it.

    The optimiser is Adam with lr 4e-4 and betas (0.9, 0.99), as in the authors' code (`D_solver`,
    `lr_d = 4e-4`); both are arguments. It is an attribute (`optimizer`), not part of `state_dict()`; save
    ``optimizer.state_dict()`` beside the checkpoint to resume. The critic's gradients are cleared after each
    step. A non-finite loss raises :class:`~nas.errors.DivergedError` (a FloatingPointError).

    Shapes: image `[B, 3, H, W]`, logits `[B, K, h, w]` (a teacher at another size is resized to the student's).
    `discriminator` replaces the default :class:`ScoreDiscriminator`; it must map (image, score) to `[B]` and
    must not mix samples (no BatchNorm).
    """

    reads = ("image", "student")

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        lambda_gp: float = 10.0,
        lr: float = 4e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        width: int = 64,
        depth: int = 3,
        spectral_norm: bool = True,
        discriminator: nn.Module | None = None,
    ):
        super().__init__()
        if lambda_gp < 0 or not lr > 0:
            raise ValueError(f"holistic KD needs lambda_gp >= 0 and lr > 0 but got {lambda_gp}, {lr}.")
        self.discriminator = (
            discriminator
            if discriminator is not None
            else ScoreDiscriminator(
                num_classes, in_channels, width=width, depth=depth, spectral_norm=spectral_norm
            )
        )
        self.lambda_gp, self.lr = float(lambda_gp), float(lr)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=tuple(betas))

    def _hint(self) -> str:
        return (
            f"the holistic adversarial term diverged: lower the discriminator lr (now {self.lr:g}) "
            "or the term's weight, or turn the term off"
        )

    def gradient_penalty(
        self, image: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor | None = None
    ) -> torch.Tensor:
        """E_b[(‖∇D(x̂_b)‖₂ − 1)²] at x̂ = α·real + (1 − α)·fake; `image` `[B, 3, h, w]` at the score size,
        `real`/`fake` `[B, K, h, w]` score maps, `alpha` `[B]` (uniform random when None). Differentiable in D."""
        if alpha is None:
            alpha = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
        a = alpha.view(-1, 1, 1, 1)
        with torch.enable_grad():
            img = image.detach().requires_grad_(True)
            mixed = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
            out = self.discriminator(img, mixed)
            g_img, g_score = torch.autograd.grad(out.sum(), [img, mixed], create_graph=True)
            norm = (g_img.flatten(1).pow(2).sum(1) + g_score.flatten(1).pow(2).sum(1)).sqrt()
            return (norm - 1).pow(2).mean()

    def discriminator_step(
        self, image: torch.Tensor, student_logits: torch.Tensor, teacher_logits: torch.Tensor
    ) -> dict[str, float]:
        """One critic update on detached inputs; returns d_loss, d_real, d_fake, gp and wasserstein
        (= d_real − d_fake) as floats."""
        teacher = _match_logits(student_logits, teacher_logits, "holistic KD")
        size = student_logits.shape[-2:]
        img = resize(image.detach(), size)
        fake = F.softmax(student_logits.detach(), dim=1)
        real = F.softmax(teacher, dim=1)
        with torch.enable_grad():
            d_real = self.discriminator(img, real).mean()
            d_fake = self.discriminator(img, fake).mean()
            gp = self.gradient_penalty(img, real, fake) if self.lambda_gp > 0 else d_real.new_zeros(())
            loss = d_fake - d_real + self.lambda_gp * gp
            stats = {"d_loss": loss.item(), "d_real": d_real.item(), "d_fake": d_fake.item(), "gp": gp.item()}
            check_finite(
                loss,
                "discriminator loss ({})".format(", ".join(f"{k}={v:.4g}" for k, v in stats.items())),
                self._hint(),
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        stats["wasserstein"] = stats["d_real"] - stats["d_fake"]
        return stats

    def forward(self, image: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        _check_4d(student_logits, "holistic KD: student logits")
        img = resize(image.detach(), student_logits.shape[-2:])
        params = list(self.discriminator.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            out = -self.discriminator(img, F.softmax(student_logits, dim=1)).mean()
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
        check_finite(out, "holistic KD student term", self._hint())
        return out

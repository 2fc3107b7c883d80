"""What every search back-end shares (the native searcher, :mod:`nas.searcher.loop`, and the NNI one,
:mod:`nas.nni_backend.search`): the A/B cut of the train split, the segmentation loss over the supernet's heads,
how the epoch's student is priced and recorded, and the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from nas.config import ExperimentConfig
from nas.data import KeyedSubset, build_dataset
from nas.errors import UserError
from nas.io import RunDir
from search_spaces.arch import Architecture

__all__ = ["CHECKPOINT", "ArgmaxPath", "SearchResult", "arch_entropies", "search_splits", "seg_loss",
           "finish_student", "search_targets",
           "with_distill"]

CHECKPOINT = "search.ckpt"


@dataclass(frozen=True)
class SearchResult:
    student: Architecture
    teacher: Architecture | None
    run_dir: RunDir
    student_latency_ms: float | None


class ArgmaxPath(torch.nn.Module):
    """The supernet with every choice of `arch_set` at its argmax (no noise): a close proxy of the derived network
    with the supernet's shared weights (derivation picks the most probable route per branch, this picks each
    node's most probable input)."""

    def __init__(self, net: torch.nn.Module, arch_set: str):
        super().__init__()
        self.net, self.arch_set = net, arch_set

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(x, self.arch_set, tau=1.0, argmax=True)


def arch_entropies(probs: dict[str, Any]) -> dict[str, float]:
    """Mean entropy (nats) of the α, β, γ and upsampler distributions: how undecided the search still is."""
    out = {}
    for kind in ("alpha", "beta", "gamma", "upsample"):
        dists = list(probs.get(kind, {}).values())
        if dists:
            ent = torch.stack([-(p * p.clamp_min(1e-12).log()).sum() for p in dists]).mean()
            out[f"entropy_{kind}"] = float(ent.detach())
    return out


def search_splits(cfg: ExperimentConfig) -> tuple[Any, KeyedSubset, KeyedSubset]:
    """The train split and its cut into A (weights) and B (architecture): a seeded permutation, `search.split_ratio`
    of it in A."""
    train = build_dataset(cfg.data, "train")
    n = len(train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.run.seed)).tolist()
    n_a = int(round(n * cfg.search.split_ratio))
    if n_a < cfg.data.batch_size or n - n_a < cfg.data.batch_size:
        raise UserError(f"the train split ({n} images) is too small to cut into A/B batches of {cfg.data.batch_size}")
    return train, KeyedSubset(train, order[:n_a]), KeyedSubset(train, order[n_a:])


def search_targets(sc: Any) -> list[float]:
    """The latency targets a one-run-for-every-target strategy searches: ``search.latency_target_ms`` first, then
    every other of ``search.extra_targets_ms``."""
    return [sc.latency_target_ms, *(t for t in sc.extra_targets_ms if t != sc.latency_target_ms)]


def seg_loss(ce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], out: dict[str, torch.Tensor],
             label: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """`ce` averaged over the two-branch heads (``logits_<a>_<b>``; ``logits`` where a network names no pair),
    plus `aux_weight` × its mean over the single-branch heads (``logits_<s>``): FasterSeg trains every head."""
    pair = [k for k in out if k.startswith("logits_") and k.count("_") == 2] or ["logits"]
    aux = [k for k in out if k.startswith("logits_") and k.count("_") == 1]
    loss = sum(ce(out[k], label) for k in pair) / len(pair)
    if aux and aux_weight > 0:
        loss = loss + aux_weight * sum(ce(out[k], label) for k in aux) / len(aux)
    return loss


def finish_student(cfg: ExperimentConfig, student: Architecture, table: Any, latency_weight: float, epoch: int,
                   row: dict[str, Any],
                   rederive: Callable[[Callable[[Architecture], float], float, float], Architecture] | None = None,
                   ) -> tuple[Architecture, float]:
    """The epoch's derived student with its retraining distillation and table latency recorded, and the latency
    weight adapted to the most probable one (doubled above the target, halved below 85% of it, after the
    warm-up); shared by every search back-end so that all of them derive and price alike. Writes
    ``table_latency_ms`` into `row`. Above the target, with ``search.fit_target`` and a back-end that can
    re-derive (`rederive(cost, budget, fill)`), the student is derived again within the target (and, below
    ``search.fill_target`` × the target, grown toward it)
    (:func:`search_spaces.derive.derive_within_budget`); ``table_latency_ms_most_probable`` keeps the latency
    before that."""
    sc = cfg.search
    shape = (cfg.latency.batch, 3, *cfg.latency.input_hw)

    def price(arch: Architecture) -> float:
        return table.predict_architecture(arch, shape)

    if table is None:
        return with_distill(sc, student), latency_weight
    lat = most_probable = price(student)
    row["table_latency_ms_most_probable"] = most_probable
    target = sc.latency_target_ms
    if rederive is not None and sc.fit_target and target > 0 and (lat > target or lat < sc.fill_target * target):
        student = rederive(price, target, sc.fill_target)
        lat = float(student.meta["budget"]["ms"])  # priced by the fit already
    student = with_distill(sc, student)
    row["table_latency_ms"] = lat
    student = student.with_meta(predicted_latency_ms=lat, latency_target_ms=sc.latency_target_ms,
                                latency_table=str(table.path))
    if sc.latency_adapt and epoch >= sc.warmup_epochs:  # the supernet's own choice, not the fitted one
        if most_probable > sc.latency_target_ms:
            latency_weight *= 2.0
        elif most_probable < 0.85 * sc.latency_target_ms:
            latency_weight = max(latency_weight / 2.0, 1e-3)
    return student, latency_weight


def with_distill(sc: Any, student: Architecture) -> Architecture:
    """`student` with the retraining distillation the search was run for recorded."""
    if sc.distill == "none":
        return student
    distill: dict[str, Any] = {"mode": sc.distill}
    if sc.distill == "tutor":
        distill["tutor_path"] = sc.tutor_path
    return replace(student, distill=distill)

"""`nas search --strategy nni-*`: NNI's one-shot strategies on our space, with our latency term.

The NNI strategy object turns :class:`~nas.nni_backend.space.FasterSegModelSpace` into its one-shot supernet
(``strategy.mutate_model``): DARTS and GumbelDARTS replace every ``LayerChoice`` by NNI's
``DifferentiableMixedLayer`` holding one architecture logit vector per label (softmax or Gumbel-softmax
weights, DARTS, Liu et al. ICLR 2019, eq. 2; SNAS/GDAS-style relaxation with NNI's annealed temperature);
RandomOneShot replaces them by ``PathSamplingLayer`` (uniform single-path training, Bender et al. 2018; Guo et
al., SPOS, 2020). The updates of NNI's one-shot Lightning modules run here, without the Lightning trainer and
without an NNI experiment (nothing is written outside the run directory), so that:

* the architecture step adds *our* differentiable expected latency (:mod:`nas.latency.expected`) computed
  from NNI's own architecture logits — NNI's ``penalty`` reads detached probabilities, so its gradient is 0;
* data splits, losses, seeds, metrics and outputs are those of the native searcher.

Schedule (as the native searcher): warm-up epochs train weights only; then each iteration takes an
architecture step on a split-B batch (Adam, `search.arch_lr`, `search.arch_betas`) and a weight step on a
split-A batch (SGD, grad-clip). RandomOneShot has no architecture parameters: each weight step trains one
seeded uniform sample, and at the end of each epoch `search.nni_candidates` samples are scored on split B by
loss + latency term, the best one being the epoch's architecture. NNI's exported choice is converted to our
architecture JSON (:func:`nas.nni_backend.convert.architecture_from_choice`) and priced by the latency table.
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.config import ExperimentConfig, config_hash
from nas.data import KeyedSubset, build_dataset, build_loader, class_weights, dataset_info
from nas.device import resolve_device, seed_everything, set_threads
from nas.errors import UserError
from nas.evaluate import evaluate
from nas.io import RunDir, atomic_write_json, save_checkpoint
from nas.latency import ArchProbs, ExpectedLatency, latency_loss
from nas.latency.cache import open_table
from nas.losses import OhemCrossEntropy, check_finite
from nas.nni_backend import NNI_VERSION, STRATEGIES, require_nni
from nas.nni_backend.convert import LabelLayout, architecture_from_choice, one_hot_logits, probs_from_logits
from nas.nni_backend.space import FasterSegModelSpace
from nas.optim import make_optimizer
from nas.searcher.common import (
    CHECKPOINT,
    SearchResult,
    arch_entropies,
    finish_student,
    search_splits,
    seg_loss,
)
from search_spaces.arch import Architecture, save_architecture
from search_spaces.registry import space_from_config

__all__ = ["NniSearchJob", "run_search_nni", "CHOICE_FILE"]

log = logging.getLogger(__name__)

CHOICE_FILE = "nni_choice.json"  # NNI's exported sample of the last epoch, next to student.arch.json


def main_branches(cfg: ExperimentConfig, scales: tuple[int, ...]) -> tuple[int, int]:
    """The two kept branches of the NNI space: `space.branches`, or (coarsest, next) for ``auto``."""
    if cfg.space.branches == "auto":
        return scales[-1], scales[-2]
    coarse, finer = (int(s) for s in cfg.space.branches.split(","))
    return coarse, finer


class NniSearchJob:
    """State and steps of one NNI-strategy search (construct, then :meth:`run_all`)."""

    def __init__(self, cfg: ExperimentConfig, run: RunDir):
        self.cfg, self.run = cfg, run
        sc = cfg.search
        if sc.strategy not in STRATEGIES:
            raise UserError(f"search.strategy {sc.strategy!r} is not an NNI strategy (known: {', '.join(STRATEGIES)})")
        strategies = require_nni()
        from nni.nas.oneshot.pytorch.differentiable import LinearTemperatureScheduler
        from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
        from nni.nas.oneshot.pytorch.supermodule.differentiable import GumbelSoftmax

        set_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)
        self.device = resolve_device(cfg.run.device)
        self.info = dataset_info(cfg.data)
        self.train, self.split_a, self.split_b = search_splits(cfg)
        self.val = build_dataset(cfg.data, "val")
        spec = space_from_config(cfg.space, self.info.num_classes)
        self.spec = spec
        self.main = main_branches(cfg, spec.scales)
        self.layout = LabelLayout(spec, self.main, cfg.space.upsample)
        self.stem_width, self.head_width = cfg.space.student_stem_width, cfg.space.student_head_width
        space = FasterSegModelSpace(spec, self.stem_width, self.head_width, cfg.space.upsample, self.main)
        name = STRATEGIES[sc.strategy]
        kwargs = {"temperature": (float(sc.tau_start), float(sc.tau_end))} if name == "GumbelDARTS" else {}
        self.strategy = getattr(strategies, name)(**kwargs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"nni(\.|$)")
            self.net: nn.Module = self.strategy.mutate_model(space).to(self.device)
        self.supermodules = [m for m in self.net.modules() if isinstance(m, BaseSuperNetModule)]
        self.logits: dict[str, nn.Parameter] = {}
        for m in self.supermodules:
            for p in getattr(m, "arch_parameters", lambda: [])():
                self.logits.setdefault(str(m.label), p)
        arch_ids = {id(p) for p in self.logits.values()}
        self.weights = [p for p in self.net.parameters() if id(p) not in arch_ids]
        self.differentiable = bool(self.logits)
        self.softmaxes = [m for m in self.net.modules() if isinstance(m, GumbelSoftmax)]
        self.temperature = LinearTemperatureScheduler(float(sc.tau_start), float(sc.tau_end)) if self.softmaxes else None
        weight = class_weights(self.train).to(self.device) if sc.class_weighted else None
        self.ce = OhemCrossEntropy(thresh=1.0, weight=weight, ignore_index=self.info.ignore_index)
        self.w_opt = make_optimizer(sc.weight_optimizer, self.weights, sc.weight_lr, sc.weight_momentum,
                                    sc.weight_decay)
        self.a_opt = (torch.optim.Adam(list(self.logits.values()), lr=sc.arch_lr, betas=sc.arch_betas,
                                       weight_decay=sc.arch_weight_decay) if self.differentiable else None)
        self.rng = np.random.RandomState(cfg.run.seed)  # NNI's own sampling draws an unseeded RandomState
        self.latency_weight = sc.latency_weight
        self.table, self.expected = None, None
        if sc.latency_target_ms > 0:
            stems, heads = (self.stem_width, 1.0), (self.head_width, 1.0)  # the native searcher's table key
            self.table = open_table(cfg.latency, spec, stems, heads, device=self.device)
            self.expected = ExpectedLatency(self.table, spec, tuple(cfg.latency.input_hw), self.stem_width,
                                            self.head_width, branches=self.main)
        self.history: list[dict[str, Any]] = []
        self.sample: dict[str, Any] = {}
        self.student: Architecture | None = None

    # ------------------------------------------------------------------ NNI's choices
    def resample(self) -> dict[str, Any]:
        """Draw one uniform sample of every label (seeded) and set NNI's path-sampling layers to it."""
        memo: dict[str, Any] = {}
        for m in self.supermodules:
            if m.label not in memo and hasattr(m, "choice"):
                memo[m.label] = m.choice.random(random_state=self.rng)
        for m in self.supermodules:
            m.resample(memo)
        return {str(k): str(v) for k, v in memo.items()}

    def export(self) -> dict[str, Any]:
        """NNI's exported choice (argmax of its logits for DARTS / GumbelDARTS)."""
        memo: dict[str, Any] = {}
        for m in self.supermodules:
            memo.update(m.export(memo))
        return {str(k): str(v) for k, v in memo.items()}

    def probs(self) -> dict[str, Any]:
        """Architecture probabilities (softmax of NNI's logits) in :meth:`Supernet.arch_probs` layout."""
        return probs_from_logits(self.layout, self.logits)

    def latency(self, probs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(latency term of the loss, expected latency in ms) of `probs`; differentiable."""
        lat = self.expected(ArchProbs(**probs))
        lat = self.table.corrected(lat) if self.table.correction else lat
        sc = self.cfg.search
        return latency_loss(lat, sc.latency_target_ms, sc.latency_loss, self.latency_weight, sc.latency_exponent), lat

    # ------------------------------------------------------------------ steps
    def _arch_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """DARTS' first-order architecture step on a split-B batch, plus our latency term."""
        image, label = batch["image"].to(self.device), batch["label"].to(self.device)
        self.net.train()
        self.a_opt.zero_grad(set_to_none=True)
        loss = self.ce(self.net(image)["logits"], label)
        logs = {"a_loss_student": float(loss.detach())}
        if self.expected is not None:
            lat_loss, lat = self.latency(self.probs())
            loss = loss + lat_loss
            logs.update(a_latency_loss=float(lat_loss.detach()), expected_latency_ms=float(lat.detach()))
        check_finite(loss, "architecture loss", "lower the learning rates")
        loss.backward(inputs=list(self.logits.values()))
        self.a_opt.step()
        return logs

    def _weight_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        image, label = batch["image"].to(self.device), batch["label"].to(self.device)
        self.net.train()
        if not self.differentiable:
            self.resample()
        self.w_opt.zero_grad(set_to_none=True)
        loss = seg_loss(self.ce, self.net(image), label, self.cfg.search.aux_weight)
        check_finite(loss, "weight loss", "lower the learning rates")
        loss.backward(inputs=self.weights)
        if self.cfg.search.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.weights, self.cfg.search.grad_clip)
        self.w_opt.step()
        return {"w_loss_student": float(loss.detach())}

    # ------------------------------------------------------------------ epochs
    def _batches(self, subset: KeyedSubset, epoch: int, salt: int) -> Iterator[dict[str, torch.Tensor]]:
        """Endless seeded shuffled batches of `subset` (a new order each pass)."""
        for k in itertools.count():
            seed = (self.cfg.run.seed * 1_000_003 + epoch * 7919 + salt + 7 * k) % (2**31)
            yield from build_loader(self.cfg.data, "train", shuffle=True, seed=seed, dataset=subset, drop_last=True)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """One warm-up or search epoch; returns its metrics row."""
        sc = self.cfg.search
        searching = epoch >= sc.warmup_epochs
        for p in self.logits.values():
            p.requires_grad_(searching)
        row: dict[str, Any] = {"epoch": epoch, "phase": "search" if searching else "warmup",
                               "strategy": sc.strategy, "latency_weight": self.latency_weight}
        if self.temperature is not None:
            tau = self.temperature.step(max(0, epoch - sc.warmup_epochs), max(1, sc.epochs - 1))
            for m in self.softmaxes:
                m.tau = tau
            row["tau"] = tau
        torch.manual_seed(self.cfg.run.seed * 7 + epoch)  # Gumbel noise of NNI's GumbelSoftmax
        batches_a = self._batches(self.split_a, epoch, 1)
        batches_b = self._batches(self.split_b, epoch, 2)
        n_iters = sc.iters_per_epoch or len(self.split_a) // self.cfg.data.batch_size
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        for it in range(n_iters):
            logs: dict[str, float] = {}
            if searching and self.differentiable:
                logs.update(self._arch_step(next(batches_b)))
            logs.update(self._weight_step(next(batches_a)))
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            if self.cfg.run.log_every and (it + 1) % self.cfg.run.log_every == 0:
                log.info("epoch %d iter %d/%d %s", epoch, it + 1, n_iters,
                         " ".join(f"{k}={v / (it + 1):.4g}" for k, v in sorted(sums.items())))
        row["seconds"] = time.perf_counter() - t0
        row.update({k: v / max(1, n_iters) for k, v in sums.items()})
        row.update(self.end_of_epoch(epoch))
        return row

    def _pick_random(self, epoch: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """RandomOneShot's choice: of `nni_candidates` seeded samples, the lowest split-B loss + latency term."""
        batches = list(itertools.islice(self._batches(self.split_b, epoch, 99), 2))
        best: tuple[float, dict[str, Any], dict[str, Any]] | None = None
        self.net.eval()
        for _ in range(max(1, self.cfg.search.nni_candidates)):
            sample = self.resample()
            probs = probs_from_logits(self.layout, one_hot_logits(self.layout, sample), normalise=lambda t: t)
            with torch.no_grad():
                score = sum(float(self.ce(self.net(b["image"].to(self.device))["logits"], b["label"].to(self.device)))
                            for b in batches) / max(1, len(batches))
                if self.expected is not None:
                    score += float(self.latency(probs)[0])
            if best is None or score < best[0]:
                best = (score, sample, probs)
        return best[1], best[2]

    def end_of_epoch(self, epoch: int) -> dict[str, Any]:
        """Export NNI's choice, convert it to our architecture, score and price it, save it."""
        cfg = self.cfg
        row: dict[str, Any] = {}
        if self.differentiable:
            self.sample = self.export()
            probs = self.probs()
            label_probs = {lab: F.softmax(p.detach(), -1) for lab, p in self.logits.items()}
        else:
            self.sample, probs = self._pick_random(epoch)
            label_probs = None
        row.update(arch_entropies(probs))
        if self.expected is not None:
            row["expected_latency_ms"] = float(self.latency(probs)[1].detach())
        meta = {"source_run": str(self.run.path), "epoch": epoch, "config_hash": config_hash(cfg),
                "search_backend": f"nni {NNI_VERSION}", "nni_strategy": STRATEGIES[cfg.search.strategy],
                "distill": cfg.search.distill}
        student = architecture_from_choice(self.layout, self.sample, self.stem_width, self.head_width,
                                           probs=label_probs, meta=meta)
        self.resample_to(self.sample)
        frozen = self.net.freeze(self.sample) if hasattr(self.net, "freeze") else self.net
        val_loader = build_loader(cfg.data, "val", shuffle=False, dataset=self.val)
        row["val_miou_student"] = evaluate(frozen, val_loader, self.info.num_classes, self.device,
                                           max_batches=cfg.search.val_batches or None).miou
        student, self.latency_weight = finish_student(
            cfg, student, self.table, self.latency_weight, epoch, row,
            rederive=lambda cost, budget, fill: architecture_from_choice(
                self.layout, self.sample, self.stem_width, self.head_width, probs=label_probs, meta=meta, cost=cost,
                budget_ms=budget, fill=fill))
        at_min = student.meta.get("at_min_depth", {})
        row["at_min_depth"] = int(any(at_min.values()))
        self.history.append({k: {str(kk): vv.detach().cpu().tolist() for kk, vv in d.items()}
                             if isinstance(d, dict) else d.detach().cpu().tolist() for k, d in probs.items()})
        save_architecture(student, self.run.file("student.arch.json"))
        atomic_write_json(self.run.file(CHOICE_FILE), {"strategy": STRATEGIES[cfg.search.strategy],
                                                       "nni_version": NNI_VERSION, "epoch": epoch,
                                                       "sample": self.sample})
        self.student = student
        return row

    def resample_to(self, sample: dict[str, Any]) -> None:
        """Point NNI's path-sampling layers at `sample` (no-op for differentiable layers)."""
        for m in self.supermodules:
            m.resample(dict(sample))

    def run_all(self) -> SearchResult:
        """Every warm-up and search epoch; one metrics row, architecture and checkpoint per epoch."""
        total = self.cfg.search.warmup_epochs + self.cfg.search.epochs
        for epoch in range(total):
            row = self.run_epoch(epoch)
            self.run.metrics.append(row)
            save_checkpoint(self.run.file(CHECKPOINT), {
                "kind": "nni-search", "epoch": epoch, "strategy": self.cfg.search.strategy,
                "supernet": self.net.state_dict(), "history": self.history, "sample": self.sample,
                "latency_weight": self.latency_weight, "config_hash": config_hash(self.cfg),
            })
            log.info("epoch %d done: %s", epoch, ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                          for k, v in row.items()))
        student = self.student
        return SearchResult(student, None, self.run, student.meta.get("predicted_latency_ms"))


def run_search_nni(cfg: ExperimentConfig, resume: bool = False) -> SearchResult:
    """Run a search with the NNI strategy `cfg.search.strategy` in `runs/<name>/` (not resumable)."""
    if resume:
        raise UserError(f"--resume is only supported by the native searcher, not --strategy {cfg.search.strategy}")
    run = RunDir(f"{cfg.run.root}/{cfg.run.name}")
    if run.file(CHECKPOINT).is_file():
        raise UserError(f"{run.path} already holds a search: choose another --name")
    require_nni()
    run = RunDir.create(cfg)
    return NniSearchJob(cfg, run).run_all()

"""The search job: weight warm-up, then alternating architecture and weight steps, one checkpoint per epoch.

FasterSeg's bi-level schedule (Chen et al., ICLR 2020): the train split is cut into A (weights, SGD) and B (architecture,
Adam). Each search iteration first takes an architecture step on a B batch — student loss = CE + KD from the
co-searched teacher + latency term, teacher loss = CE — then a weight step on an A batch for both sets. The
warm-up trains weights only, with the student's widths sandwich-sampled (widest, narrowest, random).

Every epoch writes a metrics row, the derived `student.arch.json` / `teacher.arch.json`, and a checkpoint
(atomically). Data order and Gumbel noise are seeded per epoch, so resuming from a checkpoint repeats exactly
what an uninterrupted run would have done (on CPU).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from nas import distributed as dist
from nas.config import ExperimentConfig, config_hash
from nas.data import build_dataset, build_loader, class_weights, dataset_info
from nas.device import resolve_device, seed_everything, set_threads
from nas.distill import create_kd_loss
from nas.errors import UserError
from nas.evaluate import evaluate
from nas.io import RunDir, resume_checkpoint, save_checkpoint
from nas.latency import ArchProbs, ExpectedLatency, latency_loss
from nas.latency.cache import open_table
from nas.losses import OhemCrossEntropy, check_finite
from nas.optim import make_optimizer
from nas.searcher.common import (
    CHECKPOINT,
    ArgmaxPath,
    SearchResult,
    arch_entropies,
    finish_student,
    search_splits,
    search_targets,
    seg_loss,
    with_distill,
)
from nas.searcher.evolution import STATE as EVOLUTION_STATE
from search_spaces.arch import Architecture, save_architecture
from search_spaces.derive import derive
from search_spaces.fasterseg import create_supernet

__all__ = ["SearchJob", "run_search"]

log = logging.getLogger(__name__)

_FINE_GRAINED = (0.002, 0.994, 0.004)  # FasterSeg's α / β / γ latency weights
_ADVICE = "lower search.weight_lr / search.arch_lr"  # what a diverged loss asks for


class SearchJob:
    """State and steps of one search run (construct, then :meth:`run`)."""

    def __init__(self, cfg: ExperimentConfig, run: RunDir):
        self.cfg, self.run = cfg, run
        sc = cfg.search
        set_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)
        self.device = dist.local_device(resolve_device(cfg.run.device))
        self.info = dataset_info(cfg.data)
        with dist.local_main_first():  # one process per node builds a data cache
            self.train, self.split_a, self.split_b = search_splits(cfg)
            self.val = build_dataset(cfg.data, "val")
        self.net = dist.convert_sync_batchnorm(create_supernet(cfg.space, self.info.num_classes),
                                               cfg.run.sync_bn).to(self.device)
        dist.broadcast_module(self.net)
        self.sets = ("student", "teacher") if sc.teacher else ("student",)
        weight = class_weights(self.train).to(self.device) if sc.class_weighted else None
        self.ce = OhemCrossEntropy(thresh=1.0, weight=weight, ignore_index=self.info.ignore_index)
        self.kd = create_kd_loss("pixel", temperature=sc.kd_temperature, ignore_index=self.info.ignore_index)
        self.w_opt = make_optimizer(sc.weight_optimizer, self.net.weight_parameters(), sc.weight_lr,
                                    sc.weight_momentum, sc.weight_decay)
        self.a_opt = torch.optim.Adam(self.net.arch_parameters(), lr=sc.arch_lr, betas=sc.arch_betas,
                                      weight_decay=sc.arch_weight_decay)
        self.latency_weight = sc.latency_weight
        self.expected = None
        self.table = None
        if sc.latency_target_ms > 0:
            spec = self.net.spec
            stems = (cfg.space.student_stem_width, 1.0)
            heads = (cfg.space.student_head_width, 1.0)
            self.table = dist.from_main(lambda: open_table(cfg.latency, spec, stems, heads, device=self.device))
            self.expected = ExpectedLatency(self.table, spec, tuple(cfg.latency.input_hw), stems[0], heads[0],
                                            branches=self.net.main_branches)
            set_threads(cfg.run.threads)  # the table's timing backend set its own thread count
        self.start_epoch = 0
        self.epoch = 0  # the epoch running now (named by a divergence error)
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ schedule
    @property
    def total_epochs(self) -> int:
        return self.cfg.search.warmup_epochs + self.cfg.search.epochs

    def tau(self, epoch: int) -> float:
        sc = self.cfg.search
        k = epoch - sc.warmup_epochs
        if k < 0 or sc.epochs <= 1:
            return sc.tau_start
        return sc.tau_start * (sc.tau_end / sc.tau_start) ** (k / (sc.epochs - 1))

    def _loader(self, subset, epoch: int, salt: int) -> DataLoader:
        seed = (self.cfg.run.seed * 1_000_003 + epoch * 7919 + salt) % (2**31)
        return dist.shard_loader(build_loader(self.cfg.data, "train", shuffle=True, seed=seed, dataset=subset,
                                              drop_last=True))

    # ------------------------------------------------------------------ losses
    def _latency_term(self) -> tuple[torch.Tensor, float]:
        probs = ArchProbs(**self.net.arch_probs("student"))
        sc = self.cfg.search
        if sc.fine_grained:
            parts = [probs.mix(True, False, False), probs.mix(False, True, False), probs.mix(False, False, True)]
            lat = sum(w * self.expected(p) for w, p in zip(_FINE_GRAINED, parts))
        else:
            lat = self.expected(probs)
        lat = self.table.corrected(lat) if self.table.correction else lat
        loss = latency_loss(lat, sc.latency_target_ms, sc.latency_loss, self.latency_weight, sc.latency_exponent)
        return loss, float(lat.detach())

    # ------------------------------------------------------------------ steps
    def _weight_step(self, batch: dict[str, torch.Tensor], tau: float, gen: torch.Generator,
                     width_mode: str) -> dict[str, float]:
        image, label = batch["image"].to(self.device), batch["label"].to(self.device)
        self.net.train()
        self.w_opt.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        teacher_logits = None
        total = torch.zeros((), device=self.device)
        if "teacher" in self.sets:
            t_out = self.net(image, "teacher", tau=tau, generator=gen)
            t_loss = seg_loss(self.ce, t_out, label, self.cfg.search.aux_weight)
            teacher_logits = t_out["logits"].detach()
            total = total + t_loss
            logs["w_loss_teacher"] = float(t_loss.detach())
        s_out = self.net(image, "student", tau=tau, generator=gen, width_mode=width_mode)
        s_loss = seg_loss(self.ce, s_out, label, self.cfg.search.aux_weight)
        if teacher_logits is not None and self.cfg.search.kd_weight > 0:
            kd = self.kd(s_out["logits"], teacher_logits, mask=label)
            s_loss = s_loss + self.cfg.search.kd_weight * kd
            logs["w_kd"] = float(kd.detach())
        total = total + s_loss
        logs["w_loss_student"] = float(s_loss.detach())
        check_finite(total, "weight loss", _ADVICE, self.epoch, self.run.file(CHECKPOINT))
        total.backward()
        dist.all_reduce_grads(self.net.weight_parameters())
        if self.cfg.search.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.net.weight_parameters(), self.cfg.search.grad_clip)
        self.w_opt.step()
        return logs

    def _arch_step(self, batch: dict[str, torch.Tensor], tau: float, gen: torch.Generator) -> dict[str, float]:
        image, label = batch["image"].to(self.device), batch["label"].to(self.device)
        self.net.train()
        self.a_opt.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        total = torch.zeros((), device=self.device)
        teacher_logits = None
        if "teacher" in self.sets:
            t_out = self.net(image, "teacher", tau=tau, generator=gen)
            t_loss = self.ce(t_out["logits"], label)
            teacher_logits = t_out["logits"].detach()
            total = total + t_loss
            logs["a_loss_teacher"] = float(t_loss.detach())
        s_out = self.net(image, "student", tau=tau, generator=gen)
        s_loss = self.ce(s_out["logits"], label)
        if teacher_logits is not None and self.cfg.search.kd_weight > 0:
            s_loss = s_loss + self.cfg.search.kd_weight * self.kd(s_out["logits"], teacher_logits, mask=label)
        if self.expected is not None:
            lat_loss, lat_ms = self._latency_term()
            s_loss = s_loss + lat_loss
            logs["a_latency_loss"], logs["expected_latency_ms"] = float(lat_loss.detach()), lat_ms
        total = total + s_loss
        logs["a_loss_student"] = float(s_loss.detach())
        check_finite(total, "architecture loss", _ADVICE, self.epoch, self.run.file(CHECKPOINT))
        total.backward(inputs=self.net.arch_parameters())  # weight gradients are not needed here
        dist.all_reduce_grads(self.net.arch_parameters())
        self.a_opt.step()
        return logs

    # ------------------------------------------------------------------ epochs
    def run_epoch(self, epoch: int) -> dict[str, Any]:
        sc = self.cfg.search
        self.epoch = epoch
        one_shot = sc.strategy == "evolution"  # weights only, every epoch: the evolution searches afterwards
        searching = epoch >= sc.warmup_epochs and not one_shot
        tau = self.tau(epoch)
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.run.seed * 7 + epoch)
        loader_a = self._loader(self.split_a, epoch, 1)
        loader_b = iter(self._loader(self.split_b, epoch, 2)) if searching else None
        n_iters = sc.iters_per_epoch or len(loader_a)
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        it = 0
        while it < n_iters:
            for batch in loader_a:
                if it >= n_iters:
                    break
                logs: dict[str, float] = {}
                if searching:
                    try:
                        b_batch = next(loader_b)
                    except StopIteration:
                        loader_b = iter(self._loader(self.split_b, epoch, 2 + it))
                        b_batch = next(loader_b)
                    logs.update(self._arch_step(b_batch, tau, gen))
                    width_mode = "sample"
                else:
                    width_mode = ("max", "min", "random")[it % 3] if self.net.has_widths("student") else "sample"
                logs.update(self._weight_step(batch, tau, gen, width_mode))
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                it += 1
                if self.cfg.run.log_every and it % self.cfg.run.log_every == 0:
                    log.info("epoch %d iter %d/%d %s", epoch, it, n_iters,
                             " ".join(f"{k}={v / it:.4g}" for k, v in sorted(sums.items())))
        sums = dist.average_dict(sums)
        dist.average_buffers(self.net)  # BatchNorm running statistics: the same model on every rank
        phase = "search" if searching else ("supernet" if one_shot else "warmup")
        row: dict[str, Any] = {"epoch": epoch, "phase": phase, "tau": tau,
                               "seconds": time.perf_counter() - t0, "latency_weight": self.latency_weight}
        row.update({k: v / max(1, it) for k, v in sums.items()})
        row.update(self.end_of_epoch(epoch))
        return row

    def end_of_epoch(self, epoch: int) -> dict[str, Any]:
        """Derive, score and save the current architectures; adapt the latency weight."""
        cfg = self.cfg
        row: dict[str, Any] = {}
        if cfg.search.strategy == "evolution":  # the logits stay uniform: there is nothing to derive yet
            return row
        row.update(arch_entropies(self.net.arch_probs("student")))
        val_loader = dist.shard_loader(build_loader(cfg.data, "val", shuffle=False, dataset=self.val))
        max_b = cfg.search.val_batches or None
        archs: dict[str, Architecture] = {}
        meta = {"source_run": str(self.run.path), "epoch": epoch, "config_hash": config_hash(cfg)}
        for s in self.sets:
            arch = derive(self.net, s, branches=cfg.space.branches)
            archs[s] = arch.with_meta(**meta, **({"distill": cfg.search.distill} if s == "student" else {}))
            scores = evaluate(ArgmaxPath(self.net, s), val_loader, self.info.num_classes, self.device,
                              max_batches=max_b, combine=dist.sum_confusion)
            row[f"val_miou_{s}"] = scores.miou
        student, self.latency_weight = finish_student(
            cfg, archs["student"], self.table, self.latency_weight, epoch, row,
            rederive=lambda cost, budget, fill: derive(self.net, "student", branches=cfg.space.branches, cost=cost,
                                                       budget_ms=budget, fill=fill).with_meta(
                **meta, distill=cfg.search.distill))
        at_min = student.meta.get("at_min_depth", {})
        row["at_min_depth"] = int(any(at_min.values())) if isinstance(at_min, dict) else int(bool(at_min))
        archs["student"] = student
        if dist.is_main():
            save_architecture(student, self.run.file("student.arch.json"))
            if "teacher" in archs:
                save_architecture(archs["teacher"], self.run.file("teacher.arch.json"))
        self.archs = archs
        return row

    # ------------------------------------------------------------------ checkpoints
    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "kind": "search",
            "epoch": epoch,
            "supernet": self.net.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "weight_optimizer": self.cfg.search.weight_optimizer,
            "latency_weight": self.latency_weight,
            "history": self.history,
            "config_hash": config_hash(self.cfg),
        }

    def load(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "search":
            raise UserError("the checkpoint is not a search checkpoint")
        try:
            self.net.load_state_dict(state["supernet"])
            self.w_opt.load_state_dict(state["w_opt"])
            self.a_opt.load_state_dict(state["a_opt"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"the search checkpoint does not match this configuration: {str(exc).splitlines()[0][:160]}") from None
        sc = self.cfg.search  # the configured rates win over the saved ones: a resume may lower a learning rate
        for group in self.w_opt.param_groups:
            group.update(lr=sc.weight_lr, weight_decay=sc.weight_decay)
            if "momentum" in group:
                group["momentum"] = sc.weight_momentum
        for group in self.a_opt.param_groups:
            group.update(lr=sc.arch_lr, betas=sc.arch_betas, weight_decay=sc.arch_weight_decay)
        self.latency_weight = float(state["latency_weight"])
        self.history = list(state.get("history", []))
        self.start_epoch = int(state["epoch"]) + 1

    def run_all(self) -> SearchResult:
        metrics = self.run.metrics
        if dist.is_main():
            metrics.truncate(self.start_epoch)
        for epoch in range(self.start_epoch, self.total_epochs):
            row = self.run_epoch(epoch)
            probs = self.net.arch_probs("student")
            self.history.append({k: {str(kk): vv.detach().cpu().tolist() for kk, vv in d.items()}
                                 if isinstance(d, dict) else d.detach().cpu().tolist() for k, d in probs.items()})
            if dist.is_main():
                metrics.append(row)
                save_checkpoint(self.run.file(CHECKPOINT), self.state(epoch))
            dist.dump_rank_state(self.run.path, "supernet", self.net)
            log.info("epoch %d done: %s", epoch, ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                          for k, v in row.items()))
        if self.cfg.search.strategy == "evolution":
            return self.evolve()
        if self.start_epoch >= self.total_epochs and not hasattr(self, "archs"):
            self.end_of_epoch(self.total_epochs - 1)
        student = self.archs["student"]
        if student.meta.get("at_min_depth") and any(student.meta["at_min_depth"].values()):
            log.warning("the derived student ended at the minimum-depth bound: the latency target may be too tight")
        return SearchResult(student, self.archs.get("teacher"), self.run, student.meta.get("predicted_latency_ms"))


    def _targets_and_price(self) -> tuple[list[float], Any]:
        """The evolution's targets (the main one first) and the table price of a derived network."""
        cfg, sc = self.cfg, self.cfg.search
        if self.table is None:
            raise UserError("search.strategy=evolution needs a latency target: set search.latency_target_ms")
        shape = (cfg.latency.batch, 3, *cfg.latency.input_hw)
        return search_targets(sc), lambda arch: self.table.predict_architecture(arch, shape)

    def check_targets(self) -> None:
        """Refuse, before any training, a target that no architecture of the space can meet."""
        from nas.searcher.evolution import check_reachable

        targets, price = self._targets_and_price()
        check_reachable(self.net, self.cfg.space.branches, price, targets, self.cfg.search.evolution_window,
                        self.cfg.run.seed)

    def evolve(self) -> SearchResult:
        """The evolutionary search over the trained supernet: one student per target, each saved as
        ``student_<T>ms.arch.json``; the first target's is also ``student.arch.json``."""
        from nas.searcher.evolution import Evolution, target_file

        cfg, sc = self.cfg, self.cfg.search
        targets, price = self._targets_and_price()
        meta = {"source_run": str(self.run.path), "config_hash": config_hash(cfg), "latency_table": str(self.table.path)}
        evo = Evolution(cfg, self.net, self.split_a, self.split_b, price, self.device, self.run.path, meta)
        students = {t: with_distill(sc, a) for t, a in evo.run(targets).items()}
        if dist.is_main():
            for t, arch in students.items():
                save_architecture(arch, self.run.file(target_file(t)))
            save_architecture(students[targets[0]], self.run.file("student.arch.json"))
        self.archs = {"student": students[targets[0]]}
        student = self.archs["student"]
        return SearchResult(student, None, self.run, student.meta.get("predicted_latency_ms"))


def _open_checkpoint(cfg: ExperimentConfig, run: RunDir, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (None for a fresh run); warns when the configuration changed since."""
    state = resume_checkpoint(run.file(CHECKPOINT), resume, "a search")
    saved = (state or {}).get("weight_optimizer", "sgd")  # checkpoints from before search.weight_optimizer are SGD
    if state is not None and saved != cfg.search.weight_optimizer:
        raise UserError(f"the search checkpoint was written with search.weight_optimizer={saved}, not "
                        f"{cfg.search.weight_optimizer}: resume with the same optimizer or start a new run")
    if state is not None and state.get("config_hash") != config_hash(cfg):
        log.warning("resuming with a configuration that differs from the checkpoint's")
    return state


def run_search(cfg: ExperimentConfig, resume: bool = False) -> SearchResult:
    """Run (or resume) a search in `runs/<name>/`; returns the derived architectures. Under torchrun every
    rank runs this: rank 0 checks and reads the run folder and alone writes to it."""
    dist.setup(cfg.run.device)
    run = RunDir(f"{cfg.run.root}/{cfg.run.name}")
    state = dist.from_main(lambda: _open_checkpoint(cfg, run, resume))
    job = SearchJob(cfg, run)
    if state is not None:
        job.load(state)
    elif cfg.search.strategy == "evolution":
        job.check_targets()
    # Only now, with the data, the latency table and any checkpoint accepted, is the run folder written: a refused
    # job leaves no folder behind, nor overwrites the config of the run it refused to resume.
    if dist.is_main():
        RunDir.create(cfg)
        if state is None:  # a fresh supernet: scores of an earlier one's evolution do not carry over
            run.file(EVOLUTION_STATE).unlink(missing_ok=True)
    if state is not None:
        log.info("resuming %s at epoch %d", run.path, job.start_epoch)
    return job.run_all()

"""Successive halving over random architectures within the latency budget (``search.strategy=halving``).

The differentiable search and the one-shot supernet rank architectures by weights they share. What decides how
well a derived network retrains on a short recipe is how fast the network learns *on its own*: on the embedded
dataset, the mean training loss of a network's first 300 retraining iterations ranks 33 retrained networks with
a Spearman correlation of -0.87 to their final val mIoU (``experiments/proxy_vs_final.py``), while shared weights
train the early cells at 1/8 on every route, which likely flatters deep 1/8 chains. This strategy measures that
signal directly, by successive halving (Jamieson & Talwalkar, AISTATS 2016; the rung schedule of Hyperband, Li
et al., JMLR 2018), which is also the strong random-search-with-early-stopping baseline of NAS (Li & Talwalkar,
UAI 2019):

* for each latency target T, ``search.halving_candidates`` architectures of the space are drawn by
  :func:`search_spaces.random_arch.draw_within`, kept only when their table latency is within [window · T, T]
  (rejection on latency alone, so the budget is spent);
* every candidate trains from scratch on split A for ``search.halving_iters`` iterations (the retraining's
  optimizer, constant learning rate and loss) and is scored by its class-weighted cross-entropy on split B,
  which it never trained on (the val split stays untouched for the final comparison);
* the best 1/η (``search.halving_eta``) go on from their weights to η times as many iterations, and so on until
  one is left: the target's student.

A candidate's weights and optimizer state are kept between rungs under ``halving/``; the state is saved in
``search.ckpt`` after every candidate's rung, so an interrupted search continues where it stopped and ends with
the same student.
"""

from __future__ import annotations

import logging
import math
import shutil
import statistics
import time
from typing import Any

import torch
from torch import nn

from nas.config import ExperimentConfig, config_hash
from nas.data import KeyedSubset, build_dataset, build_loader, class_weights, dataset_info
from nas.device import resolve_device, seed_everything, set_threads
from nas.errors import UserError
from nas.io import RunDir, load_checkpoint, resume_checkpoint, save_checkpoint
from nas.latency.cache import open_table
from nas.losses import OhemCrossEntropy, check_finite
from nas.optim import make_optimizer
from nas.searcher.common import CHECKPOINT, SearchResult, search_splits, search_targets, with_distill
from nas.searcher.evolution import target_file
from search_spaces.arch import Architecture, save_architecture
from search_spaces.builder import build_network
from search_spaces.random_arch import draw_within
from search_spaces.registry import branches_from_config, space_from_config
from search_spaces.upsample import resize

__all__ = ["rung_plan", "Halving", "run_halving"]

log = logging.getLogger(__name__)

WEIGHTS = "halving"  # folder of the candidates' weights between rungs
# the candidates' random stream is seeded by (run seed, target index, this tag): never the stream of a plain integer
# seed, which the benchmarks draw their random networks from, so a search never starts from the random peers it
# is compared with
_STREAM = 0x5EA7C4


def rung_plan(candidates: int, iters: int, eta: int) -> list[tuple[int, int]]:
    """(candidates, cumulative iterations) of every rung that trains: ``candidates`` at ``iters``, then
    ⌈n / η⌉ of them at η × the iterations, until the next rung would hold one."""
    plan, n, total = [], candidates, iters
    while n > 1:
        plan.append((n, total))
        n, total = math.ceil(n / eta), total * eta
    return plan


class Halving:
    """The successive-halving search of one run, for one or more targets (construct, then :meth:`search`)."""

    def __init__(self, cfg: ExperimentConfig, run: RunDir, device: torch.device, state: dict[str, Any] | None):
        self.cfg, self.run, self.device = cfg, run, device
        info = dataset_info(cfg.data)
        self.spec = space_from_config(cfg.space, info.num_classes)
        self.shape = (cfg.latency.batch, 3, *cfg.latency.input_hw)
        space = cfg.space
        self.table = open_table(cfg.latency, self.spec, (space.student_stem_width, 1.0),
                                (space.student_head_width, 1.0), device=device)
        set_threads(cfg.run.threads)  # the table's timing backend set its own thread count
        train, self.split_a, split_b = search_splits(cfg)
        plain = build_dataset(cfg.data, "train", augment=False)  # split B as it is: every candidate, same pixels
        self.score_loader = build_loader(cfg.data, "train", shuffle=False, drop_last=False,
                                         dataset=KeyedSubset(plain, split_b.indices))
        tc = cfg.train
        weight = class_weights(train).to(device) if tc.class_weighted else None
        self.loss = OhemCrossEntropy(tc.ohem_thresh, tc.ohem_min_kept, weight=weight, ignore_index=info.ignore_index)
        self.ce = OhemCrossEntropy(1.0, weight=weight, ignore_index=info.ignore_index)
        # "history" is the architecture-probability trace of the other strategies (empty here); "rungs" is this one's
        self.state: dict[str, Any] = state or {"strategy": "halving", "history": [], "rungs": [], "targets": {}}

    # ------------------------------------------------------------------ candidates
    def price(self, arch: Architecture) -> float:
        return self.table.predict_architecture(arch, self.shape)

    def draw(self, target: float, ti: int) -> list[tuple[Architecture, float]]:
        """The target's candidates (seeded by run seed and target index); a one-line error when fewer than two of
        the space's architectures price within the window."""
        sc, space = self.cfg.search, self.cfg.space
        lo = sc.evolution_window * target
        found, draws = draw_within(self.spec, self.price, lambda lat: lo <= lat <= target, sc.halving_candidates,
                                   (self.cfg.run.seed, ti, _STREAM), space.student_stem_width,
                                   space.student_head_width, branches=branches_from_config(space),
                                   upsample="random" if space.upsample == "search" else space.upsample,
                                   max_draws=20_000)
        if len(found) < 2:
            raise UserError(f"search target {target:g} ms: {len(found)} of {draws} random architectures price "
                            f"within [{sc.evolution_window:g} × {target:g}, {target:g}] ms, fewer than 2: choose a "
                            f"target in the space's range (nas latency show) or widen search.evolution_window")
        return found

    def _model(self, arch: Architecture, key: str) -> tuple[nn.Module, torch.optim.Optimizer, int]:
        """The candidate's network and optimizer, from its saved rung when there is one (else freshly seeded)."""
        tc = self.cfg.train
        torch.manual_seed(self.cfg.run.seed * 7919 + int(key[1:]))
        model = build_network(arch, aux_heads=True).to(self.device)
        opt = make_optimizer(tc.optimizer, model.parameters(), tc.lr, tc.momentum, tc.weight_decay)
        done = 0
        saved = self.run.file(WEIGHTS) / f"{key}.pt"
        if saved.is_file():
            ck = load_checkpoint(saved, self.device)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            done = int(ck["iters"])
        return model, opt, done

    def train_to(self, arch: Architecture, key: str, iters: int, salt: int) -> float:
        """Train candidate `key` on split A up to `iters` iterations in all, save it, and return its split-B
        cross-entropy (lower is better)."""
        tc = self.cfg.train
        model, opt, done = self._model(arch, key)
        model.train()
        epoch_seed = (self.cfg.run.seed * 1_000_003 + int(key[1:]) * 7919 + salt) % (2**31)
        loader = build_loader(self.cfg.data, "train", shuffle=True, seed=epoch_seed, dataset=self.split_a,
                              drop_last=True)
        while done < iters:
            for batch in loader:
                if done >= iters:
                    break
                image, label = batch["image"].to(self.device), batch["label"].to(self.device)
                out = model(image)
                loss = self.loss(out["logits"], label)
                aux = [self.ce(v, label) for k, v in out.items() if k.startswith("aux")]
                if aux:
                    loss = loss + tc.aux_weight * sum(aux)
                check_finite(loss, f"halving candidate {key}'s training loss", "lower train.lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                opt.step()
                done += 1
        save_checkpoint(self.run.file(WEIGHTS) / f"{key}.pt",
                        {"model": model.state_dict(), "optimizer": opt.state_dict(), "iters": done})
        return self._score(model)

    @torch.no_grad()
    def _score(self, model: nn.Module) -> float:
        model.eval()
        total, n = 0.0, 0
        limit = self.cfg.search.halving_score_batches or None
        for i, batch in enumerate(self.score_loader):
            if limit is not None and i >= limit:
                break
            label = batch["label"].to(self.device)
            logits = resize(model(batch["image"].to(self.device))["logits"], label.shape[-2:])
            total += float(self.ce(logits, label)) * label.shape[0]
            n += label.shape[0]
        model.train()
        return total / max(n, 1)

    # ------------------------------------------------------------------ search
    def search(self, targets: list[float], pools: list[list[tuple[Architecture, float]]]) -> dict[float, Architecture]:
        """The winner of every target's pool (targets in turn, state saved after every candidate's rung)."""
        return {t: self._run_target(t, ti, pool) for ti, (t, pool) in enumerate(zip(targets, pools))}

    def _run_target(self, target: float, ti: int, pool: list[tuple[Architecture, float]]) -> Architecture:
        sc = self.cfg.search
        tstate = self.state["targets"].setdefault(f"{target:g}", {
            "candidates": [{"key": f"c{ti * 1000 + i}", "arch": a.to_dict(), "latency_ms": lat, "scores": {}}
                           for i, (a, lat) in enumerate(pool)],
            "alive": [f"c{ti * 1000 + i}" for i in range(len(pool))]})
        cands = {c["key"]: c for c in tstate["candidates"]}
        for rung, (n, iters) in enumerate(rung_plan(len(cands), sc.halving_iters, sc.halving_eta)):
            alive = tstate["alive"]
            if len(alive) < n:  # this rung was finished and cut before an interruption
                continue
            t0 = time.perf_counter()
            for key in alive:
                c = cands[key]
                if str(iters) not in c["scores"]:
                    c["scores"][str(iters)] = self.train_to(Architecture.from_dict(c["arch"]), key, iters, rung)
                    save_checkpoint(self.run.file(CHECKPOINT), self.state)
            ranked = sorted(alive, key=lambda k: (cands[k]["scores"][str(iters)], cands[k]["latency_ms"]))
            keep = max(1, math.ceil(n / sc.halving_eta))
            for key in ranked[keep:]:
                (self.run.file(WEIGHTS) / f"{key}.pt").unlink(missing_ok=True)
            scores = [cands[k]["scores"][str(iters)] for k in ranked]
            row = {"target_ms": target, "rung": rung, "candidates": n, "iters": iters, "best_loss_b": scores[0],
                   "median_loss_b": statistics.median(scores), "best_latency_ms": cands[ranked[0]]["latency_ms"],
                   "seconds": time.perf_counter() - t0}
            tstate["alive"] = ranked[:keep]
            self.state["rungs"].append(row)
            save_checkpoint(self.run.file(CHECKPOINT), self.state)
            self.run.metrics.append(row)
            log.info("halving %g ms: rung %d, %d candidates at %d iterations, best split-B loss %.4f (median %.4f), "
                     "%d go on", target, rung, n, iters, scores[0], row["median_loss_b"], keep)
        best = cands[tstate["alive"][0]]
        arch = Architecture.from_dict(best["arch"])
        final = max((int(k) for k in best["scores"]), default=0)
        return arch.with_meta(strategy="halving", predicted_latency_ms=best["latency_ms"], latency_target_ms=target,
                              latency_table=str(self.table.path), halving_loss_b=best["scores"].get(str(final)),
                              halving_iters=final, candidates=len(cands), source_run=str(self.run.path),
                              config_hash=config_hash(self.cfg))


def run_halving(cfg: ExperimentConfig, resume: bool = False) -> SearchResult:
    """Run (or resume) a successive-halving search in `runs/<name>/`: one student per target, each saved as
    ``student_<T>ms.arch.json``; the first target's is also ``student.arch.json``. One process (not torchrun)."""
    from nas import distributed as dist

    sc = cfg.search
    if dist.env_world() is not None:
        raise UserError("search.strategy=halving trains its candidates one after another in one process: run it "
                        "without torchrun")
    run = RunDir(f"{cfg.run.root}/{cfg.run.name}")
    state = resume_checkpoint(run.file(CHECKPOINT), resume, "a search")
    if state is not None and state.get("strategy") != "halving":
        raise UserError(f"{run.path} holds a search of another strategy: resume it with that strategy or choose "
                        f"another --name")
    set_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)
    halving = Halving(cfg, run, resolve_device(cfg.run.device), state)
    targets = search_targets(sc)
    pools = [halving.draw(t, ti) for ti, t in enumerate(targets)]  # refused here, before the folder is written
    RunDir.create(cfg)
    if state is None:
        shutil.rmtree(run.file(WEIGHTS), ignore_errors=True)  # weights of an earlier run's candidates
        save_checkpoint(run.file(CHECKPOINT), halving.state)
    students = {t: with_distill(sc, a) for t, a in halving.search(targets, pools).items()}
    for t, arch in students.items():
        save_architecture(arch, run.file(target_file(t)))
    save_architecture(students[targets[0]], run.file("student.arch.json"))
    shutil.rmtree(run.file(WEIGHTS), ignore_errors=True)
    student = students[targets[0]]
    return SearchResult(student, None, run, student.meta.get("predicted_latency_ms"))

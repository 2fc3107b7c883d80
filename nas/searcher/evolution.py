"""One-shot evolutionary search over the trained supernet (``search.strategy=evolution``).

The supernet's weights are trained first, with every choice drawn uniformly at random each step (single-path
one-shot training: Guo et al., SPOS, ECCV 2020; widths sandwich-sampled as in slimmable networks) and no
architecture step. Then, for every latency target, an evolutionary search (SPOS §3.3) over the discrete choices
of α, β, γ and the upsamplers:

* a candidate (a *genome*: one index per row of each architecture parameter) is derived with the same rules as
  the differentiable search and priced by the latency table; only candidates within [window · T, T] are kept;
* it is scored with the supernet's inherited weights, BatchNorm statistics recalibrated on split A (the
  statistics of the mixed training do not fit one path: SPOS, OFA), as mIoU on split B, which the weights never
  trained on, so that the val split stays untouched for the final comparison;
* each generation keeps the best quarter, fills the population with mutations and crossovers of the best half,
  and the best candidate ever scored is the target's student.

One supernet serves every target (``search.latency_target_ms`` and ``search.extra_targets_ms``); scores are
shared between targets. The state is saved after every generation, so an interrupted search continues where it
stopped and ends with the same students.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.data import KeyedSubset, build_dataset, build_loader
from nas.errors import UserError
from nas.evaluate import evaluate
from nas.io import atomic_write_json, read_json
from nas.searcher.common import ArgmaxPath
from search_spaces.arch import Architecture
from search_spaces.derive import derive
from search_spaces.fasterseg import Supernet

__all__ = ["Genome", "genome_space", "random_genome", "mutate", "crossover", "genome_key", "applied",
           "recalibrate_bn", "check_reachable", "target_file", "Evolution"]

log = logging.getLogger(__name__)

Genome = dict[str, tuple[int, ...]]  # architecture parameter name → chosen index per row
_ONE_HOT = 30.0  # logit of a chosen index: softmax puts all but e^-30 of the mass on it
STATE = "evolution.json"


def genome_space(net: Supernet, arch_set: str = "student") -> dict[str, tuple[int, int]]:
    """(rows, choices) of every architecture parameter of `arch_set`, by name."""
    return {name: (p.shape[0], p.shape[1]) for name, p in net.arch[arch_set].named_parameters()}


def random_genome(space: dict[str, tuple[int, int]], rng: np.random.Generator) -> Genome:
    """Every row's choice uniformly at random."""
    return {name: tuple(int(v) for v in rng.integers(0, n, rows)) for name, (rows, n) in space.items()}


def mutate(genome: Genome, space: dict[str, tuple[int, int]], rng: np.random.Generator, prob: float) -> Genome:
    """Each row given another choice with probability `prob` (at least one row changes)."""
    rows = [(name, i) for name, (n_rows, n) in space.items() for i in range(n_rows) if n > 1]
    flip = {rows[j] for j in np.flatnonzero(rng.random(len(rows)) < prob)} or {rows[int(rng.integers(len(rows)))]}
    out = {}
    for name, choices in genome.items():
        n = space[name][1]
        out[name] = tuple((c + int(rng.integers(1, n))) % n if (name, i) in flip else c for i, c in enumerate(choices))
    return out


def crossover(a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
    """Each row from `a` or `b` with equal probability."""
    return {name: tuple(x if rng.random() < 0.5 else y for x, y in zip(a[name], b[name])) for name in a}


def genome_key(genome: Genome) -> str:
    return json.dumps({k: list(v) for k, v in sorted(genome.items())}, separators=(",", ":"))


@contextlib.contextmanager
def applied(net: Supernet, genome: Genome, arch_set: str = "student") -> Iterator[None]:
    """`net` with the logits of `arch_set` set to the one-hot choices of `genome`, restored afterwards."""
    params = dict(net.arch[arch_set].named_parameters())
    saved = {name: p.detach().clone() for name, p in params.items()}
    try:
        with torch.no_grad():
            for name, choices in genome.items():
                p = params[name]
                p.zero_()
                p[torch.arange(p.shape[0]), torch.tensor(choices)] = _ONE_HOT
        yield
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])


def recalibrate_bn(net: nn.Module, forward: Callable[[torch.Tensor], Any], loader: Any, batches: int,
                   device: torch.device) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) from `batches`
    batches through `forward`: the statistics of one path, not of the mixture the supernet trained."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = net.training
    net.train()
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i >= batches:
                    break
                forward(batch["image"].to(device))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        net.train(was_training)


def check_reachable(net: Supernet, branches: str, price: Callable[[Architecture], float], targets: list[float],
                    window: float, seed: int, tries: int = 2000) -> None:
    """Raise a one-line UserError for a target that none of `tries` random genomes prices within
    [window × T, T]: checked before the supernet trains, so an unreachable target costs no training."""
    space = genome_space(net)
    rng = np.random.default_rng(seed)
    lats: list[float] = []
    for target in targets:
        while not any(window * target <= v <= target for v in lats):
            if len(lats) >= tries:
                raise UserError(f"search target {target:g} ms: none of {len(lats)} random architectures prices "
                                f"within [{window:g} × {target:g}, {target:g}] ms (they span {min(lats):.2f}–"
                                f"{max(lats):.2f} ms): choose a target in that range")
            with applied(net, random_genome(space, rng)):
                lats.append(price(derive(net, "student", branches=branches)))


def target_file(target_ms: float) -> str:
    """The student file of one target: ``student_<T>ms.arch.json``."""
    return f"student_{target_ms:g}ms.arch.json"


class Evolution:
    """The evolutionary search of one trained supernet, for one or more targets (construct, then :meth:`run`).

    `price(arch)` is the table latency of a derived network (ms); `meta` is recorded in every student."""

    def __init__(self, cfg: Any, net: Supernet, split_a: KeyedSubset, split_b: KeyedSubset,
                 price: Callable[[Architecture], float], device: torch.device, run_path: Path,
                 meta: dict[str, Any]):
        self.cfg, self.net, self.price, self.device = cfg, net, price, device
        self.path, self.meta = Path(run_path), meta
        sc = cfg.search
        # split B as it is, without the train augmentation: every candidate is scored on the same pixels
        plain = build_dataset(cfg.data, "train", augment=False)
        self.calib_set = KeyedSubset(plain, split_a.indices)
        self.score_loader = build_loader(cfg.data, "train", shuffle=False, drop_last=False,
                                         dataset=KeyedSubset(plain, split_b.indices))
        self.space = genome_space(net)
        self.state: dict[str, Any] = {"scores": {}, "targets": {}}
        state_file = self.path / STATE
        if state_file.is_file():
            self.state = read_json(state_file, "evolution state")
        self.population, self.generations = sc.evolution_population, sc.evolution_generations
        self.window, self.mutation = sc.evolution_window, sc.evolution_mutation

    # ------------------------------------------------------------------ candidates
    def derive(self, genome: Genome) -> Architecture:
        with applied(self.net, genome):
            return derive(self.net, "student", branches=self.cfg.space.branches)

    def score(self, genome: Genome) -> float:
        """mIoU on split B of the candidate's single path, after BatchNorm recalibration (cached by genome)."""
        key = genome_key(genome)
        if key in self.state["scores"]:
            return float(self.state["scores"][key])
        sc = self.cfg.search
        path = ArgmaxPath(self.net, "student")
        saved = {k: v.clone() for k, v in self.net.state_dict().items() if "running" in k or "num_batches" in k}
        with applied(self.net, genome):
            # a loader built anew with one seed: every candidate, in this process or a resumed one, is
            # recalibrated on the same batches (a shared loader's order advances with each pass)
            calib = build_loader(self.cfg.data, "train", shuffle=True, seed=self.cfg.run.seed + 11, drop_last=True,
                                 dataset=self.calib_set)
            recalibrate_bn(self.net, path, calib, sc.evolution_calib_batches, self.device)
            miou = evaluate(path, self.score_loader, self.net.spec.num_classes, self.device,
                            max_batches=sc.evolution_score_batches or None).miou
        self.net.load_state_dict(saved, strict=False)  # the supernet's own statistics back, for later epochs
        self.state["scores"][key] = float(miou)
        return float(miou)

    def _feasible(self, make: Callable[[], Genome], target: float, seen: set[str], tries: int = 2000
                  ) -> tuple[Genome, float] | None:
        """The first genome from `make` whose derived network's table latency is within the target's window."""
        for _ in range(tries):
            g = make()
            key = genome_key(g)
            if key in seen:
                continue
            lat = self.price(self.derive(g))
            if self.window * target <= lat <= target:
                seen.add(key)
                return g, lat
        return None

    # ------------------------------------------------------------------ search
    def run(self, targets: list[float]) -> dict[float, Architecture]:
        """The best student within each target (targets searched in turn, state saved every generation)."""
        return {t: self._run_target(t, ti) for ti, t in enumerate(targets)}

    def _run_target(self, target: float, ti: int) -> Architecture:
        tstate = self.state["targets"].setdefault(f"{target:g}", {"generation": 0, "population": [],
                                                                   "history": []})
        seen = set(self.state["scores"])  # every candidate scored so far, for any target, is not drawn again
        t0 = time.perf_counter()
        if not tstate["population"]:
            rng = np.random.default_rng([self.cfg.run.seed, ti, 0])
            pop = []
            for _ in range(self.population):
                found = self._feasible(partial(random_genome, self.space, rng), target, seen)
                if found is None:
                    break
                pop.append(found)
            if not pop:
                raise UserError(f"search target {target:g} ms: no random architecture prices within "
                                f"[{self.window:g} × {target:g}, {target:g}] ms: choose another target")
            tstate["population"] = self._scored(pop)
            self._save(tstate, target, t0)
        while tstate["generation"] < self.generations:
            rng = np.random.default_rng([self.cfg.run.seed, ti, tstate["generation"] + 1])
            pop = [(_genome(g), g["latency_ms"]) for g in tstate["population"]]
            elite = pop[:max(1, len(pop) // 4)]
            parents = pop[:max(2, len(pop) // 2)]
            children = []
            for k in range(self.population - len(elite)):
                found = self._feasible(partial(self._child, parents, rng, k % 2 == 0), target, seen, tries=200)
                if found is not None:
                    children.append(found)
            tstate["population"] = self._scored(elite + children)[:self.population]
            tstate["generation"] += 1
            self._save(tstate, target, t0)
        best = tstate["population"][0]
        arch = self.derive(_genome(best))
        return arch.with_meta(**self.meta, strategy="evolution", predicted_latency_ms=best["latency_ms"],
                              latency_target_ms=target, supernet_score_b=best["score"],
                              evaluated=len(self.state["scores"]))

    def _child(self, parents: list[tuple[Genome, float]], rng: np.random.Generator, mutation: bool) -> Genome:
        """A mutation of one random parent, or a crossover of two."""
        pick = lambda: parents[int(rng.integers(len(parents)))][0]  # noqa: E731
        return mutate(pick(), self.space, rng, self.mutation) if mutation else crossover(pick(), pick(), rng)

    def _scored(self, pop: list[tuple[Genome, float]]) -> list[dict[str, Any]]:
        """`pop` scored, best first, as JSON-ready records."""
        rows = [{"genome": {k: list(v) for k, v in g.items()}, "latency_ms": lat, "score": self.score(g)}
                for g, lat in pop]
        return sorted(rows, key=lambda r: (-r["score"], r["latency_ms"]))

    def _save(self, tstate: dict[str, Any], target: float, t0: float) -> None:
        pop = tstate["population"]
        tstate["history"].append({"generation": tstate["generation"], "best": pop[0]["score"],
                                  "median": float(np.median([r["score"] for r in pop])),
                                  "best_latency_ms": pop[0]["latency_ms"], "evaluated": len(self.state["scores"])})
        atomic_write_json(self.path / STATE, self.state)
        log.info("evolution %g ms: generation %d/%d, best split-B mIoU %.4f at %.2f ms, %d scored (%.0f s)",
                 target, tstate["generation"], self.generations, pop[0]["score"], pop[0]["latency_ms"],
                 len(self.state["scores"]), time.perf_counter() - t0)


def _genome(record: dict[str, Any]) -> Genome:
    return {k: tuple(v) for k, v in record["genome"].items()}

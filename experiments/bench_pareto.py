"""Does searching pay? Searched students against random architectures and hand-designed baselines, at equal latency.

At each latency target (``--targets``, or ``auto``: the 20th / 50th / 80th percentiles of the table latency of
random architectures of the space, i.e. spread over its reachable range):

* ``searched``: the student of ``--searches`` independent searches (seeds 0, 1, …) under that target
  (``--strategy evolution``: group ``searched:evolution``, one one-shot supernet per seed evolved for every target,
  with the :data:`EVOLUTION` schedule; ``--strategy halving``: group ``searched:halving``, the quick start's
  successive halving, :data:`HALVING`);
* ``random``: ``--randoms`` architectures of the same space whose table latency is within ±5% of the target, all
  drawn before any is trained by one sampler (:func:`draw_randoms`: each draw takes its cell widths from the next
  window of two adjacent widths, upsamplers and branch pairs at random; rejection on table latency only);
* ``baseline:<family>``: each hand-designed family (``search_spaces.baselines``) at the largest width whose
  *measured* latency is within the target.

Every network is retrained with one recipe (the config's ``train`` and ``distill`` sections: by default pixel KD
from the shipped teacher for all), trained, evaluated, priced and measured at one input size (``data.image_size``
= ``latency.input_hw``), and all are timed end to end in the same interleaved rounds at the end. One row per
network goes to ``experiments/results/bench_pareto.csv`` (``target_ms, group, name, seed, table_ms, measured_ms,
params_m, miou``); per target it prints the searched mean ± std, its percentile among the random networks, a
bootstrap 95% interval of (searched mean − random median), and each baseline; ``bench_pareto.png`` plots measured
latency against mIoU.

    .venv/bin/python experiments/bench_pareto.py                      # the benchmark (hours on 2 CPU cores)
    .venv/bin/python experiments/bench_pareto.py --quick              # smoke run on tiny settings, a few minutes

Rows of another ``--strategy`` already in the CSV for the same targets are kept (and re-timed), so strategies
searched on one plan are compared side by side. Resumable: searches and retrains are cached under ``--work`` (a network's folder is named by the hash of its
architecture, or family and width), and a network already in the CSV is not trained again (its row is kept, and
re-timed when its model file is still there).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

RESULTS = HERE / "results"
QUICK = ("data.num_train=24", "data.num_val=8", "data.batch_size=4", "space.name=tiny", "space.layers=null",
         "space.fch=null", "latency.calibrate=0", "latency.repeats=3", "latency.rounds=1", "latency.warmup=1",
         "search.warmup_epochs=1", "search.epochs=1", "search.iters_per_epoch=2", "search.val_batches=1",
         "train.epochs=1", "train.iters_per_epoch=2", "distill.losses=[]", "distill.teacher=null")
# --strategy evolution: the one-shot supernet's schedule (weights only, uniform single paths, cross-entropy alone as
# in SPOS: a co-searched teacher would be a random one here; the retrain's AdamW: with the search's default SGD at
# 0.02 the supernet was still at 8% split-B mIoU, all background, after 3,200 iterations) and the evolution
EVOLUTION = ("search.strategy=evolution", "search.teacher=false", "search.warmup_epochs=0", "search.epochs=8",
             "search.iters_per_epoch=400", "search.weight_optimizer=adamw", "search.weight_lr=0.002",
             "search.weight_decay=0.0001",
             "search.evolution_population=16", "search.evolution_generations=6", "search.evolution_calib_batches=8",
             "search.evolution_score_batches=16")
# --strategy halving: the quick start's successive halving (8 random networks within [0.95 T, T], 100 / 200 / 400
# iterations each on the retrain's recipe), one run per seed for every target
HALVING = ("search.strategy=halving", "search.halving_candidates=8", "search.halving_iters=100", "search.halving_eta=2")
ONE_RUN = {"evolution": EVOLUTION, "halving": HALVING}  # strategies that search every target in one run
FIELDS = ("target_ms", "group", "name", "seed", "table_ms", "measured_ms", "params_m", "miou", "width", "model")


def arch_key(arch: Any) -> str:
    """A short hash of what defines a network (the architecture without its meta)."""
    blob = json.dumps({k: v for k, v in arch.to_dict().items() if k != "meta"}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def draw_randoms(spec: Any, table: Any, shape: tuple[int, ...], target: float, n: int, seed: int, stem: float,
                 head: float, tolerance: float = 0.05, max_draws: int = 50_000) -> tuple[list[tuple[Any, float]], int]:
    """`n` random architectures of `spec` with table latency within ±`tolerance` of `target`, and how many were
    drawn (:func:`search_spaces.random_arch.draw_within`, the sampler the halving search draws from too: widths
    from windows of adjacent widths in turn, everything else at random, rejection on latency only)."""
    from search_spaces.random_arch import draw_within

    found, draws = draw_within(spec, lambda a: table.predict_architecture(a, shape),
                               lambda lat: abs(lat / target - 1) <= tolerance, n, seed, stem, head,
                               max_draws=max_draws)
    if len(found) < n:
        raise SystemExit(f"only {len(found)} of {n} random architectures within ±{100 * tolerance:.0f}% of "
                         f"{target:.2f} ms in {max_draws} draws")
    return [(a.with_meta(source="bench_pareto random", predicted_latency_ms=lat), lat) for a, lat in found], draws


def auto_targets(spec: Any, table: Any, shape: tuple[int, ...], stem: float, head: float, n: int = 400,
                 quantiles: tuple[float, ...] = (0.2, 0.5, 0.8)) -> list[float]:
    """Targets spread over the space's reachable range: quantiles of the table latency of `n` random networks."""
    from nas.latency.validate import random_networks

    lats = sorted(table.predict_architecture(a, shape) for a in random_networks(spec, n, 7, stem, head))
    return [round(lats[int(q * (len(lats) - 1))], 2) for q in quantiles]


def percentile_of(value: float, population: list[float]) -> float:
    """Share (0–100) of `population` at or below `value`."""
    return 100.0 * sum(p <= value for p in population) / len(population)


def bootstrap_diff(searched: list[float], randoms: list[float], n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean(searched) − median(randoms), resampling both groups."""
    import numpy as np

    rng = np.random.default_rng(seed)
    s, r = np.asarray(searched), np.asarray(randoms)
    diffs = [rng.choice(s, len(s)).mean() - np.median(rng.choice(r, len(r))) for _ in range(n)]
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def _parse_shard(text: str) -> tuple[int, int] | None:
    """``K/N`` as (K, N) with 0 <= K < N; empty text is no shard."""
    if not text:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard {text!r}: expected K/N, e.g. 0/2") from None
    if not 0 <= k < n:
        raise SystemExit(f"--shard {text!r}: K must be in 0..N-1")
    return k, n


def share(items: list[tuple], searched: str, searches: int, k: int, n: int, search_cost: float) -> list[tuple]:
    """Shard `k` of `n`'s part of the plan: its own searched networks (it ran those searches: seeds = k mod n)
    and, of the others in plan order, each one given to the least-loaded shard so far, where a seed's search
    with its retrains counts `search_cost` retrains. A network planned at several targets (a baseline width that
    fits more than one) stays with one shard: two processes never train one run folder. Every shard computes
    the same split."""
    loads = [search_cost * len(range(j, searches, n)) for j in range(n)]
    mine = [it for it in items if it[1] == searched]
    owner: dict[str, int] = {}
    for it in items:
        if it[1] == searched:
            continue
        j = owner.get(it[2])
        if j is None:
            j = owner[it[2]] = min(range(n), key=lambda i: (loads[i], i))
            loads[j] += 1
        if j == k:
            mine.append(it)
    return mine


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _num(v: str) -> Any:
    try:
        return float(v) if v not in ("", None) else None
    except ValueError:
        return v


def _time_all(rows: list[dict[str, Any]], cfg: Any, table: Any, rounds: int) -> None:
    """Every network with a model file, timed end to end in the same interleaved rounds (median per network), on
    the latency table's scale."""
    from nas.latency.cache import backend_for_table
    from nas.models import load_model
    from search_spaces.builder import InferenceWrapper

    backend = backend_for_table(cfg.latency, table, "cpu")
    shape = (cfg.latency.batch, 3, *cfg.latency.input_hw)
    timed = [(r, InferenceWrapper(load_model(r["model"])[0])) for r in rows if r.get("model")
             and Path(str(r["model"])).is_file()]
    samples: dict[int, list[float]] = {i: [] for i in range(len(timed))}
    for k in range(rounds):
        for i, (_, net) in enumerate(timed):
            samples[i].append(backend.measure(net, [shape], warmup=2 if k == 0 else 1))
    for i, (row, _) in enumerate(timed):
        row["measured_ms"] = statistics.median(samples[i])


def summarise(rows: list[dict[str, Any]]) -> list[str]:
    """Per target: searched mean ± std, its percentile among randoms, the bootstrap interval, each baseline."""
    lines = []
    for target in sorted({r["target_ms"] for r in rows}):
        at = [r for r in rows if r["target_ms"] == target and r.get("miou") is not None]
        rnd = [100 * r["miou"] for r in at if r["group"] == "random"]
        lines.append(f"target {target:g} ms:")
        if rnd:
            lines.append(f"  random    median {statistics.median(rnd):.1f}, 75th pct "
                         f"{sorted(rnd)[int(0.75 * (len(rnd) - 1))]:.1f} (n = {len(rnd)})")
        for group in sorted({str(r["group"]) for r in at if str(r["group"]).startswith("searched")}):
            s = [100 * r["miou"] for r in at if r["group"] == group]
            sd = statistics.stdev(s) if len(s) > 1 else 0.0
            ms = statistics.mean(r["measured_ms"] or 0 for r in at if r["group"] == group)
            lines.append(f"  {group}  {statistics.mean(s):.1f} ± {sd:.1f} (n = {len(s)}, measured {ms:.2f} ms)")
            if len(rnd) > 1:
                lo, hi = bootstrap_diff(s, rnd)
                lines.append(f"    percentile among random {percentile_of(statistics.mean(s), rnd):.0f}; "
                             f"mean − random median 95% CI [{lo:+.1f}, {hi:+.1f}]")
        for r in at:
            if str(r["group"]).startswith("baseline:"):
                lines.append(f"  {r['group']:<20} {100 * r['miou']:.1f} (width {r['width']}, measured "
                             f"{r['measured_ms'] or float('nan'):.2f} ms)")
    return lines


def render(rows: list[dict[str, Any]], path: Path) -> Path:
    """Measured latency vs val mIoU, every network, one colour per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = sorted({r["group"] for r in rows})
    for g in groups:
        pts = [(r["measured_ms"], 100 * r["miou"]) for r in rows if r["group"] == g and r.get("measured_ms")]
        if pts:
            ax.scatter(*zip(*pts), label=g, s=28 if g == "random" else 44, alpha=0.8,
                       marker="s" if g.startswith("baseline") else "o")
    for t in sorted({r["target_ms"] for r in rows}):
        ax.axvline(t, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("measured latency (ms, torch eager, CPU)")
    ax.set_ylabel("val mIoU (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _search_names(strategy: str, targets: list[float], seed: int, label: str = "") -> list[str]:
    """The run folders of `seed`'s searches: one run for every target (evolution, halving), or one per target;
    a `label` names a variant of the strategy (its own folders and group)."""
    if strategy in ONE_RUN:
        return [f"{label or strategy}_s{seed}"]
    return [f"search{'_' + label if label else ''}_{t:g}ms_s{seed}" for t in targets]


def _search_done(args: argparse.Namespace, work: Path, targets: list[float], seed: int) -> bool:
    """Whether every search of `seed` has finished (its folders hold ``search.done``)."""
    return all((work / n / "search.done").is_file()
               for n in _search_names(args.strategy, targets, seed, args.label))


def _search(args: argparse.Namespace, overrides: list[str], work: Path, targets: list[float], seed: int
            ) -> dict[float, Path]:
    """The searched student of every target for one seed (cached): one search per target (native), or one
    run for all targets (evolution: one supernet and its evolution; halving: one pool of candidates per target)."""
    import nas
    from nas.searcher.evolution import target_file

    def run(name: str, extra: list[str], defaults: tuple[str, ...] = ()) -> Path:
        folder = work / name
        if not (folder / "search.done").is_file():  # the strategy's defaults first: --set overrides them
            nas.search(nas.load_config(args.config, [*defaults, *overrides, *extra, f"run.root={work}",
                                                     f"run.name={name}", f"run.seed={seed}"]))
            (folder / "search.done").write_text("")
        return folder

    if args.strategy in ONE_RUN:
        extra = [f"search.latency_target_ms={targets[0]}",
                 f"search.extra_targets_ms=[{','.join(f'{t:g}' for t in targets[1:])}]"]
        folder = run(_search_names(args.strategy, targets, seed, args.label)[0], extra, ONE_RUN[args.strategy])
        return {t: folder / target_file(t) for t in targets}
    return {t: run(name, [f"search.latency_target_ms={t}"]) / "student.arch.json"
            for t, name in zip(targets, _search_names(args.strategy, targets, seed, args.label))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(HERE / "configs" / "pareto.yaml"))
    p.add_argument("--set", action="append", default=[], help="config override for every search and retrain")
    p.add_argument("--targets", default="auto", help="comma-separated ms, or auto (20/50/80th pct of random)")
    p.add_argument("--searches", type=int, default=3)
    p.add_argument("--strategy", choices=("native", *ONE_RUN), default="native",
                   help="native: one differentiable search per target and seed; evolution: one one-shot supernet "
                        "per seed, evolved for every target (EVOLUTION overrides); halving: one successive "
                        "halving per seed and target (HALVING overrides)")
    p.add_argument("--label", default="",
                   help="name of a variant of the strategy (its --set overrides): its searches get their own folders "
                        "and the group searched:LABEL, beside the strategy's own")
    p.add_argument("--randoms", type=int, default=8)
    p.add_argument("--baselines", default="bisenetv2,ppliteseg,ddrnet")
    p.add_argument("--rounds", type=int, default=12, help="interleaved timing rounds")
    p.add_argument("--work", default="runs/bench_pareto")
    p.add_argument("--tag", default="")
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    p.add_argument("--prepare", action="store_true",
                   help="only fix the plan (targets, random draws, baseline widths timed on these idle cores), "
                        "then stop: what --shard processes need")
    p.add_argument("--collect", action="store_true",
                   help="train and search nothing: time and summarise the networks already trained")
    p.add_argument("--shard", default="", metavar="K/N",
                   help="train only this process's share of the plan (searches of seeds = K mod N, the rest "
                        "balanced); no CSV, timing or summary: a later run without --shard collects the cache")
    args = p.parse_args(argv)
    shard = _parse_shard(args.shard)

    import torch

    import nas
    from nas.data import dataset_info
    from nas.errors import UserError
    from nas.io import atomic_write_csv, atomic_write_json
    from nas.latency.cache import prepare_table
    from nas.trainer import train_dir, train_or_reuse
    from search_spaces.arch import load_architecture, save_architecture
    from search_spaces.baselines import BASELINES
    from search_spaces.baselines.scaling import latency_measure_from_config, scale_to_latency
    from search_spaces.registry import space_from_config

    overrides = [*(QUICK if args.quick else ()), *args.set]
    tag = args.tag or ("quick" if args.quick else "")
    work = Path(args.work + (f"_{tag}" if tag else ""))
    cfg = nas.load_config(args.config, [*overrides, f"run.root={work}"])
    if tuple(cfg.data.image_size) != tuple(cfg.latency.input_hw):
        raise SystemExit("bench_pareto measures accuracy where latency is priced: set data.image_size = "
                         "latency.input_hw")
    torch.set_num_threads(max(cfg.run.threads, 1))
    families = [f for f in args.baselines.split(",") if f]
    for f in families:
        BASELINES[f]  # an unknown family fails now, not hours later
    info = dataset_info(cfg.data)
    spec = space_from_config(cfg.space, info.num_classes)
    shape = (cfg.latency.batch, 3, *cfg.latency.input_hw)
    stem, head = cfg.space.student_stem_width, cfg.space.student_head_width
    t_all = time.perf_counter()
    table, _ = prepare_table(cfg, spec, "cpu")
    targets = (auto_targets(spec, table, shape, stem, head) if args.targets == "auto"
               else [float(t) for t in args.targets.split(",")])
    print(f"targets (ms, table at {cfg.latency.input_hw[0]}x{cfg.latency.input_hw[1]}): {targets}", flush=True)

    out = RESULTS / f"bench_pareto{'_' + tag if tag else ''}.csv"
    done = {(r["target_ms"], r["group"], r["name"]): r for r in _read_rows(out)}
    rows: list[dict[str, Any]] = []

    def run_cfg(name: str, seed: int, extra: list[str]) -> Any:
        return nas.load_config(args.config, [*overrides, f"run.root={work}", f"run.name={name}", f"run.seed={seed}",
                                             *extra])

    def train(target: float, group: str, name: str, seed: int, extra: list[str], arch_path: Path | None,
              table_ms: float | None, width: float | None = None) -> None:
        key = (target, group, name)
        if key in done:
            rows.append(done[key])
            return
        cfg_net = run_cfg(name, seed, extra)
        if args.collect and not (train_dir(cfg_net) / "scores.json").is_file():
            print(f"  {group:<20} {name}: not trained yet, left out", flush=True)
            return
        t0 = time.perf_counter()
        scores = train_or_reuse(cfg_net, arch_path)
        rows.append({"target_ms": target, "group": group, "name": name, "seed": seed, "table_ms": table_ms,
                     "measured_ms": None, "params_m": scores["params"] / 1e6, "miou": scores["miou"],
                     "width": width, "model": scores["model"]})
        print(f"  {group:<20} {name}: {100 * scores['miou']:.1f}% ({time.perf_counter() - t0:.0f} s)", flush=True)
        atomic_write_csv(out, [{k: r.get(k) for k in FIELDS} for r in rows])

    variant = args.label or ("" if args.strategy == "native" else args.strategy)
    searched = f"searched:{variant}" if variant else "searched"
    plans: dict[float, list[tuple]] = {t: [] for t in targets}  # trained target by target, searched first
    own_seeds = [] if args.prepare else [s for s in range(args.searches) if not shard or s % shard[1] == shard[0]]
    for seed in own_seeds:
        if args.collect and not _search_done(args, work, targets, seed):
            print(f"search seed {seed}: not finished, left out", flush=True)
            continue
        for target, arch_file in _search(args, overrides, work, targets, seed).items():
            arch = load_architecture(arch_file)
            plans[target].append((target, searched, f"net_{arch_key(arch)}", 0, [], arch_file,
                                  table.predict_architecture(arch, shape)))
    for ti, target in enumerate(targets):  # every random network is drawn before any is trained
        randoms, draws = draw_randoms(spec, table, shape, target, args.randoms, seed=ti, stem=stem, head=head)
        print(f"target {target} ms: {args.randoms} random networks in {draws} draws", flush=True)
        for arch, lat in randoms:
            path = save_architecture(arch, work / "archs" / f"{arch_key(arch)}.arch.json")
            plans[target].append((target, "random", f"net_{arch_key(arch)}", 0, [], path, lat))
    widths_file = work / "baseline_widths.json"  # timed once on idle cores, then fixed for every process
    widths = json.loads(widths_file.read_text()) if widths_file.is_file() else {}
    for target in targets:
        measure = latency_measure_from_config(cfg.latency, rounds=3, table=table)
        for family in families:
            key = f"{family}@{target:g}"
            if key not in widths:
                if shard:
                    raise SystemExit(f"no timed width for {key} in {widths_file}: run --prepare on idle cores first")
                try:
                    widths[key] = scale_to_latency(family, info.num_classes, target, measure)[0]
                except UserError as exc:  # the family cannot be made this fast: reported, not trained
                    print(f"target {target} ms: {exc}", flush=True)
                    widths[key] = None
                atomic_write_json(widths_file, widths)
            width = widths[key]
            if width is None:
                continue
            plans[target].append((target, f"baseline:{family}", f"{family}_w{width:g}", 0,
                                  ["train.model=baseline", f"train.baseline={family}",
                                   f"train.baseline_width={width}"], None, None, width))
    if args.prepare:
        print(f"plan fixed: {sum(map(len, plans.values()))} networks; baseline widths in {widths_file}")
        return 0
    items = [p for t in targets for p in plans[t]]
    if shard:
        cost = len(targets) + {"evolution": 4, "halving": 1}.get(args.strategy, len(targets))  # search + retrains
        mine = share(items, searched, args.searches, *shard, search_cost=cost)
        for target, group, name, seed, extra, path, *_ in mine:
            train_or_reuse(run_cfg(name, seed, extra), path)
            print(f"  shard {args.shard}: {group} {name} at {target:g} ms done", flush=True)
        return 0
    # the students of another strategy searched on this plan stay in the table, side by side with this one's
    rows.extend(r for r in done.values() if str(r["group"]).startswith("searched") and r["group"] != searched
                and r["target_ms"] in targets)
    for target, group, name, seed, extra, path, lat, *width in items:
        train(target, group, name, seed, extra, path, lat, width[0] if width else None)

    _time_all(rows, cfg, table, args.rounds)
    atomic_write_csv(out, [{k: r.get(k) for k in FIELDS} for r in rows])
    print("\n".join(summarise(rows)))
    png = render(rows, out.with_suffix(".png"))
    print(f"results: {out}, {png} ({time.perf_counter() - t_all:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

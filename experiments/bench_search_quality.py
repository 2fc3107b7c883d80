"""Is the searched student better than random architectures of the same latency?

Searches once (or reuses a finished search: ``--search-run``), then draws random architectures of the same space
(:func:`search_spaces.random_arch.random_architecture`) until ``--randoms`` of them have a table latency within
``--tolerance`` of the searched student's, from the same latency table. Every network is retrained from scratch
with the same recipe (the config's ``train`` section, no distillation, so only the architecture differs); the
searched one with ``--seeds`` seeds, each random one with one seed (different architectures give the spread).
Prints mean ± std and median val mIoU per group and whether the searched student beats the random median.

    .venv/bin/python experiments/bench_search_quality.py --config experiments/configs/quickstart.yaml \\
        --search-run runs/quickstart

Every retrain is cached (``scores.json``) under ``--work`` and an interrupted one resumes; the table goes to
``experiments/results/bench_search_quality.csv`` (``--tag T``: ``*_T.csv``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def similar_random_architectures(searched: Any, target: float, table: Any, input_shape: tuple[int, ...], n: int,
                                 tolerance: float, seed: int, max_draws: int = 20_000) -> list[tuple[Any, float]]:
    """`n` random architectures of the searched one's space whose table latency is within `tolerance` (relative)
    of `target` (the searched one's), with their latencies; the same branch kind, stem and head widths. Draw k
    takes its cell widths from the k-th of :func:`width_windows` in turn, so a searched network at either end
    of the space's latency range still has random neighbours (:func:`search_spaces.random_arch.draw_within`)."""
    from search_spaces.random_arch import draw_within

    ends = tuple(b.cells[-1].scale for b in searched.branches)
    found, _ = draw_within(searched.space, lambda a: table.predict_architecture(a, input_shape),
                           lambda lat: abs(lat / target - 1) <= tolerance, n, seed, searched.stem_width,
                           searched.head_width, branches=ends, max_draws=max_draws)
    if len(found) < n:
        raise SystemExit(f"only {len(found)} of {n} random architectures within ±{100 * tolerance:.0f}% of "
                         f"{target:.2f} ms in {max_draws} draws: widen --tolerance")
    return [(a.with_meta(source="bench_search_quality random", predicted_latency_ms=lat), lat) for a, lat in found]


def _summary(name: str, mious: list[float]) -> dict[str, Any]:
    return {
        "group": name,
        "n": len(mious),
        "miou_mean": statistics.mean(mious),
        "miou_std": statistics.stdev(mious) if len(mious) > 1 else 0.0,
        "miou_median": statistics.median(mious),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(HERE / "configs" / "quickstart.yaml"))
    p.add_argument("--set", action="append", default=[], help="config override for the search and every retrain")
    p.add_argument("--search-run", help="a finished search folder (student.arch.json inside); default: search now")
    p.add_argument("--randoms", type=int, default=5)
    p.add_argument("--seeds", type=int, default=2, help="retrain seeds of the searched student")
    p.add_argument("--tolerance", type=float, default=0.05, help="relative latency band around the searched one")
    p.add_argument("--work", default="runs/bench_search_quality")
    p.add_argument("--tag", default="")
    p.add_argument("--draw-seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from nas.config import load_config
    from nas.io import atomic_write_csv
    from nas.latency.table import LatencyTable
    from nas.searcher import run_search
    from nas.trainer import train_or_reuse
    from search_spaces.arch import load_architecture, save_architecture

    cfg = load_config(args.config, args.set)
    torch.set_num_threads(max(cfg.run.threads, 1))
    work = Path(args.work)
    t_start = time.perf_counter()
    if args.search_run:
        arch_path = Path(args.search_run) / "student.arch.json"
    else:
        arch_path = work / "search" / "student.arch.json"
        if not arch_path.is_file():
            ckpt = (work / "search" / "search.ckpt").is_file()
            run_search(load_config(args.config, [*args.set, f"run.root={work}", "run.name=search"]), resume=ckpt)
    searched = load_architecture(arch_path)
    table = LatencyTable.load(searched.meta["latency_table"])
    shape = (cfg.latency.batch, 3, *cfg.latency.input_hw)
    searched_lat = table.predict_architecture(searched, shape)
    randoms = similar_random_architectures(searched, searched_lat, table, shape, args.randoms, args.tolerance,
                                           args.draw_seed)

    common = [*args.set, f"run.root={work}", "distill.losses=[]", "distill.teacher=null", "distill.tutor=none"]
    rows: list[dict[str, Any]] = []
    jobs = [("searched", f"searched_s{s}", arch_path, s, searched_lat) for s in range(args.seeds)]
    for i, (arch, lat) in enumerate(randoms):
        path = save_architecture(arch, work / f"random_{i}.arch.json")
        jobs.append(("random", f"random_{i}", path, 0, lat))
    for group, name, path, seed, lat in jobs:
        t0 = time.perf_counter()
        scores = train_or_reuse(load_config(args.config, [*common, f"run.name={name}", f"run.seed={seed}"]), path)
        rows.append({"group": group, "run": name, "seed": seed, "table_latency_ms": lat,
                     "params_m": scores["params"] / 1e6, "miou": scores["miou"], "arch": str(path)})
        print(f"  {name}: table latency {lat:.2f} ms, {scores['params'] / 1e6:.3f} M params, val mIoU "
              f"{100 * scores['miou']:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    summary = [_summary(g, [r["miou"] for r in rows if r["group"] == g]) for g in ("searched", "random")]
    for s in summary:
        print(f"{s['group']:>8}: val mIoU {100 * s['miou_mean']:.2f} ± {100 * s['miou_std']:.2f} "
              f"(median {100 * s['miou_median']:.2f}, n = {s['n']})")
    beats = summary[0]["miou_mean"] > summary[1]["miou_median"]
    print(f"searched {'beats' if beats else 'does NOT beat'} the random median at "
          f"{searched_lat:.2f} ms ±{100 * args.tolerance:.0f}% ({time.perf_counter() - t_start:.0f} s in all)")
    suffix = f"_{args.tag}" if args.tag else ""
    out = atomic_write_csv(HERE / "results" / f"bench_search_quality{suffix}.csv", [*rows, *summary])
    print(f"table: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

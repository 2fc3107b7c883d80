"""Is the quick start's student worth having, run after run? Three fresh pipelines with different seeds.

For each seed: the README's main job (``nas run`` on ``experiments/configs/quickstart.yaml``: search → retrain
with pixel KD from the shipped teacher → export), the same searched student retrained without KD (same recipe,
same seed), and ``--randoms`` random architectures of the same space priced within the window the search may
use, [window × T, T] of the config's target T (drawn by ``bench_pareto.draw_randoms``, one documented sampler,
rejection on table latency only, before anything is trained and independently of the search) retrained without
KD. Prints per seed and overall: the teacher, the student with and without KD, the random peers, and the spread
over seeds.

    .venv/bin/python experiments/bench_quickstart.py --seeds 0,1,2 --randoms 2

Every run is cached under ``--work`` (finished stages and retrains are skipped, interrupted ones resumed); rows
go to ``experiments/results/bench_quickstart.csv``.
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
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(HERE / "configs" / "quickstart.yaml"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--randoms", type=int, default=2, help="random peers per seed")
    p.add_argument("--work", default="runs/bench_quickstart")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--peers-only", action="store_true",
                   help="train only the random peers (they do not depend on the search): a second process can "
                        "train them while the pipelines run")
    args = p.parse_args(argv)

    import torch
    from bench_pareto import arch_key, draw_randoms

    import nas
    from nas.data import dataset_info
    from nas.io import atomic_write_csv
    from nas.latency.cache import prepare_table
    from nas.latency.table import LatencyTable
    from nas.trainer import train_or_reuse
    from search_spaces.arch import load_architecture, save_architecture
    from search_spaces.registry import space_from_config

    work = Path(args.work)
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = nas.load_config(args.config, [*args.set, f"run.root={work}"])
    spec = space_from_config(cfg.space, dataset_info(cfg.data).num_classes)
    shape = (cfg.latency.batch, 3, *cfg.latency.input_hw)
    table, _ = prepare_table(cfg, spec, "cpu")  # the table the pipelines open (one cache)
    target, window = cfg.search.latency_target_ms, cfg.search.evolution_window
    center = (1 + window) / 2 * target  # [window × T, T] as a centre ± a relative tolerance
    no_kd = ["distill.losses=[]", "distill.teacher=null", "distill.tutor=none"]
    peers: dict[int, list[tuple[str, Path, float]]] = {}
    for seed in seeds:
        drawn, _ = draw_randoms(spec, table, shape, center, args.randoms, seed, cfg.space.student_stem_width,
                                cfg.space.student_head_width, tolerance=(1 - window) / (1 + window))
        peers[seed] = [(f"seed{seed}_random_{arch_key(arch)}",
                        save_architecture(arch, work / f"seed{seed}_random_{arch_key(arch)}.arch.json"), lat)
                       for arch, lat in drawn]
    if args.peers_only:
        for seed in seeds:
            for name, path, _ in peers[seed]:
                base = [*args.set, f"run.root={work}", f"run.seed={seed}", *no_kd, f"run.name={name}"]
                print(f"{name}: {100 * train_or_reuse(nas.load_config(args.config, base), path)['miou']:.1f}%",
                      flush=True)
        return 0
    for seed in seeds:
        base = [*args.set, f"run.root={work}", f"run.seed={seed}"]
        t0 = time.perf_counter()
        result = nas.run(args.config, overrides=[*base, f"run.name=seed{seed}"])
        cfg = nas.load_config(args.config, [*base, f"run.name=seed{seed}"])
        torch.set_num_threads(max(cfg.run.threads, 1))
        arch_path = result.outputs["search"]["arch"]
        searched = load_architecture(arch_path)
        lat = LatencyTable.load(searched.meta["latency_table"]).predict_architecture(searched, shape)
        teacher = result.outputs["teacher"]
        rows.append({"seed": seed, "group": "teacher", "name": Path(teacher["model"]).name, "table_ms": None,
                     "params_m": None, "miou": teacher["val_miou"]})
        s = result.outputs["student"]
        rows.append({"seed": seed, "group": "student_kd", "name": f"seed{seed}", "table_ms": lat,
                     "params_m": s["params"] / 1e6, "miou": s["val_miou"]})
        print(f"seed {seed}: pipeline {time.perf_counter() - t0:.0f} s, student + KD {100 * s['val_miou']:.1f}% "
              f"({lat:.2f} ms table, {s['params'] / 1e6:.2f} M)", flush=True)
        jobs = [("student_nokd", f"seed{seed}_nokd", arch_path, lat)]
        jobs += [("random_nokd", name, path, rlat) for name, path, rlat in peers[seed]]
        for group, name, path, jlat in jobs:
            t0 = time.perf_counter()
            scores = train_or_reuse(nas.load_config(args.config, [*base, *no_kd, f"run.name={name}"]), path)
            rows.append({"seed": seed, "group": group, "name": name, "table_ms": jlat,
                         "params_m": scores["params"] / 1e6, "miou": scores["miou"]})
            print(f"  {name}: {100 * scores['miou']:.1f}% ({jlat:.2f} ms table, {time.perf_counter() - t0:.0f} s)",
                  flush=True)
        out = atomic_write_csv(HERE / "results" / "bench_quickstart.csv", rows)

    print(f"\nover seeds {args.seeds} ({time.perf_counter() - t_all:.0f} s in all):")
    for group in ("teacher", "student_kd", "student_nokd", "random_nokd"):
        vals = [r["miou"] for r in rows if r["group"] == group]
        if vals:
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            print(f"  {group:<13} val mIoU {100 * statistics.mean(vals):.1f} ± {100 * sd:.1f} "
                  f"(min {100 * min(vals):.1f}, max {100 * max(vals):.1f}, n = {len(vals)})")
    print(f"table: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

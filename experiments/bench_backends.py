"""Native search vs NNI's one-shot strategies at one latency target, on the embedded digit scenes.

For each strategy (``native``, ``nni-darts``, ``nni-gumbel``, ``nni-random``) the real CLI runs
``nas search --strategy S`` (student only, no co-searched teacher, so that every back-end searches the same
thing) and then ``nas train --arch <derived student>`` with one short recipe. Reported per strategy: seconds per
search epoch (median over the architecture epochs, warm-up excluded), the search process's peak RSS, the derived
student's table latency and its measured latency (torch eager, median of repeated runs), and val mIoU after the
retrain, mean ± std over ``--seeds``. All strategies share one latency table and one data cache.

    .venv/bin/python experiments/bench_backends.py             # about 15 minutes on 2 CPU cores
    .venv/bin/python experiments/bench_backends.py --quick     # smoke run

Writes ``experiments/results/bench_backends.csv`` (``--quick``: ``bench_backends_quick.csv``). Needs the ``nni``
extra for the NNI rows (they are skipped with a note without it).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from nas.io import atomic_write_csv

__all__ = ["STRATEGIES", "search_and_train", "main"]

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
STRATEGIES = ("native", "nni-darts", "nni-gumbel", "nni-random")
# the child reports its own peak RSS: RUSAGE_CHILDREN would give the maximum over every child so far
_RUN_WITH_RSS = ("import resource, sys\nfrom nas.cli import main\nrc = main(sys.argv[1:])\n"
                 "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
                 "sys.exit(rc)")


def _hw(quick: bool) -> tuple[int, int]:
    return (32, 64) if quick else (64, 128)


def _common(work: Path, quick: bool, threads: int) -> list[str]:
    size = json.dumps(list(_hw(quick))).replace(" ", "")
    return [f"run.root={work / 'runs'}", "run.device=cpu", f"run.threads={threads}", "run.log_every=0",
            f"data.root={work / 'data'}", f"data.image_size={size}", f"data.num_train={48 if quick else 240}",
            f"data.num_val={16 if quick else 60}", "data.batch_size=8", f"latency.input_hw={size}",
            f"latency.cache_dir={work / 'tables'}", "latency.threads=1", "latency.repeats=7", "latency.calibrate=0",
            "space.layers=6", "space.fch=4"]


def _nas(args: list[str], sets: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-c", _RUN_WITH_RSS, *args, *[x for s in sets for x in ("--set", s)]]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"bench_backends: nas {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    peak = next(float(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("PEAK_RSS_KB"))
    return res, peak / 1e6


def _measured_ms(model_path: Path, hw: tuple[int, int]) -> float:
    import torch

    from nas.latency.measure import TorchBackend
    from nas.models import load_model

    model, _ = load_model(model_path)
    return TorchBackend(torch.device("cpu"), threads=1, warmup=10, repeats=30).measure(model, [(1, 3, *hw)])


def search_and_train(work: Path, strategy: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One search with `strategy` and the retrain of its student; the figures of that pair."""
    common = _common(work, args.quick, args.threads)
    name = f"{strategy}_s{seed}"
    epochs = 2 if args.quick else args.epochs
    search_sets = [*common, f"run.name={name}", f"run.seed={seed}", "search.teacher=false", "search.kd_weight=0",
                   "search.distill=none", "search.warmup_epochs=1", f"search.epochs={epochs}",
                   f"search.iters_per_epoch={4 if args.quick else args.iters}", "search.val_batches=2",
                   f"search.latency_target_ms={args.target_ms}"]
    run = work / "runs" / name
    shutil.rmtree(run, ignore_errors=True)  # a fresh search each time (data cache and latency table are kept)
    _, peak_gb = _nas(["search", "--strategy", strategy], search_sets)
    with (run / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    search_rows = rows[1:]  # after the one warm-up epoch
    arch = json.loads((run / "student.arch.json").read_text())
    train_sets = [*common, f"run.name={name}", f"run.seed={seed}", f"train.epochs={2 if args.quick else 6}",
                  f"train.iters_per_epoch={4 if args.quick else 20}"]
    _nas(["train", "--arch", str(run / "student.arch.json")], train_sets)
    scores = json.loads((run / "student" / "scores.json").read_text())
    return {
        "strategy": strategy,
        "seed": seed,
        "s_per_epoch": statistics.median(float(r["seconds"]) for r in search_rows),
        "peak_rss_gb": peak_gb,
        "table_ms": float(search_rows[-1]["table_latency_ms"]),
        "measured_ms": _measured_ms(Path(scores["model"]), _hw(args.quick)),
        "miou": float(scores["miou"]),
        "ops": " ".join(c["op"] for b in arch["branches"] for c in b["cells"]),
    }


def _summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        rs = [r for r in runs if r["strategy"] == strategy]
        mious = [r["miou"] for r in rs]
        row = {"strategy": strategy, "seeds": len(rs)}
        for key in ("s_per_epoch", "peak_rss_gb", "table_ms", "measured_ms"):
            row[key] = statistics.median(r[key] for r in rs)
        row["miou_mean"] = statistics.mean(mious)
        row["miou_std"] = statistics.stdev(mious) if len(mious) > 1 else 0.0
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes, a smoke run")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--target-ms", type=float, default=1.5, help="latency target at the data's image size")
    p.add_argument("--epochs", type=int, default=3, help="architecture epochs after the one warm-up epoch")
    p.add_argument("--iters", type=int, default=15, help="iterations per search epoch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("runs/bench_backends"), help="run folders, data cache and latency table")
    args = p.parse_args(argv)

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if importlib.util.find_spec("nni") is None:
        print("bench_backends: the `nni` extra is not installed: only the native row runs", file=sys.stderr)
        strategies = [s for s in strategies if s == "native"]
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for strategy in strategies:
            r = search_and_train(args.work, strategy, seed, args)
            runs.append(r)
            print(f"  {strategy} seed {seed}: {r['s_per_epoch']:.2f} s/epoch, {r['peak_rss_gb']:.2f} GB, table "
                  f"{r['table_ms']:.2f} ms, measured {r['measured_ms']:.2f} ms, mIoU {100 * r['miou']:.2f}",
                  flush=True)
    summary = _summary(runs)
    print(f"\ntarget {args.target_ms:g} ms\n{'strategy':<11} {'s/epoch':>8} {'peak GB':>8} {'table ms':>9} "
          f"{'measured ms':>12} {'val mIoU (%)':>14}")
    for r in summary:
        print(f"{r['strategy']:<11} {r['s_per_epoch']:8.2f} {r['peak_rss_gb']:8.2f} {r['table_ms']:9.2f} "
              f"{r['measured_ms']:12.2f} {100 * r['miou_mean']:7.2f} ± {100 * r['miou_std']:4.2f}")
    out = RESULTS / f"bench_backends{'_quick' if args.quick else ''}.csv"
    atomic_write_csv(out, summary)
    print(f"table: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

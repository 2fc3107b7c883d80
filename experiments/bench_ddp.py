"""Data-parallel throughput: samples/s of `nas search` and `nas train` under torchrun, 1 vs N processes.

Every configuration runs the real CLI (``python -m torch.distributed.run --nproc_per_node N -m nas ...``) on the
embedded digit scenes with the same global batch, so N processes split each batch N ways (gloo on CPU, NCCL on
CUDA). Samples/s is the global batch × iterations of an epoch over that epoch's ``seconds`` in ``metrics.csv``;
the first epoch (start-up, allocator warm-up; the weight warm-up of a search) is left out and the median over the remaining epochs and over
``--rounds`` interleaved rounds is kept. On CPU each process gets ``--threads`` intra-op threads, and a
single-process row with N × threads threads is the fair baseline (same cores in use).

    .venv/bin/python experiments/bench_ddp.py                  # CPU: 1 proc × 1 thread, 1 × 2, 2 × 1
    .venv/bin/python experiments/bench_ddp.py --device cuda    # one process per GPU (needs ≥ 2 GPUs for N = 2)

Writes ``experiments/results/bench_ddp.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from nas.io import atomic_write_csv

__all__ = ["run_config", "samples_per_second", "main"]

HERE = Path(__file__).resolve().parent
ARCH = HERE / "configs" / "ablation_student.arch.json"
OUT = HERE / "results" / "bench_ddp.csv"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sets(work: Path, name: str, args: argparse.Namespace, threads: int) -> list[str]:
    h, w = args.image
    sets = [f"run.root={work / 'runs'}", f"run.name={name}", f"run.device={args.device}", f"run.threads={threads}",
            "run.log_every=0", f"data.root={work / 'data'}", f"data.image_size=[{h},{w}]",
            f"data.num_train={args.num_train}", "data.num_val=8", f"data.batch_size={args.batch}"]
    if args.stage == "search":  # one warm-up epoch (not timed), then architecture + weight epochs
        sets += ["search.warmup_epochs=1", f"search.epochs={args.epochs - 1}", f"search.iters_per_epoch={args.iters}",
                 "search.val_batches=1", f"space.name={args.space}"]
    else:
        sets += [f"train.epochs={args.epochs}", f"train.iters_per_epoch={args.iters}"]
    return [x for s in sets for x in ("--set", s)]


def samples_per_second(metrics: Path, global_batch: int, iters: int) -> list[float]:
    """Samples/s of every epoch row of `metrics` after the first."""
    with metrics.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [global_batch * iters / float(r["seconds"]) for r in rows[1:]]


def run_config(work: Path, args: argparse.Namespace, nproc: int, threads: int, tag: str) -> list[float]:
    """One CLI run with `nproc` processes of `threads` threads; its per-epoch samples/s."""
    name = f"{args.stage}_{tag}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
           str(_free_port()), "-m", "nas", args.stage]
    if args.stage == "train":
        cmd += ["--arch", str(args.arch)]
    cmd += _sets(work, name, args, threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"bench_ddp: {' '.join(cmd[:8])} ... failed:\n{res.stderr[-3000:]}")
    run = work / "runs" / name
    metrics = run / "metrics.csv" if args.stage == "search" else run / "student" / "metrics.csv"
    return samples_per_second(metrics, args.batch, args.iters)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", choices=("train", "search", "both"), default="both")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--procs", type=int, default=2, help="N of the multi-process rows")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process (CPU)")
    p.add_argument("--image", type=lambda s: tuple(int(v) for v in s.split("x")), default=(128, 256))
    p.add_argument("--batch", type=int, default=8, help="global batch (split over the processes)")
    p.add_argument("--iters", type=int, default=6, help="iterations per epoch")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not timed)")
    p.add_argument("--num-train", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--arch", type=Path, default=ARCH, help="train: the student architecture")
    p.add_argument("--space", default="tiny", help="search: the search space")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)

    n = args.procs
    configs = [(1, args.threads), (n, args.threads)]
    if args.device == "cpu":
        configs.insert(1, (1, n * args.threads))
    stages = ("train", "search") if args.stage == "both" else (args.stage,)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        work = Path(tmp)
        for stage in stages:
            args.stage = stage
            samples: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
            for rnd in range(args.rounds):
                for nproc, threads in configs:
                    samples[(nproc, threads)] += run_config(work, args, nproc, threads, f"p{nproc}t{threads}r{rnd}")
            base = statistics.median(samples[configs[0]])
            for (nproc, threads), values in samples.items():
                med = statistics.median(values)
                results.append({"stage": stage, "device": args.device, "processes": nproc, "threads": threads,
                                "image": f"{args.image[0]}x{args.image[1]}", "global_batch": args.batch,
                                "samples_per_s": round(med, 3), "vs_1_process": round(med / base, 3),
                                "epochs_timed": len(values)})
    print(f"{'stage':<7} {'procs':>5} {'threads':>7} {'samples/s':>10} {'vs 1 proc':>9}")
    for r in results:
        print(f"{r['stage']:<7} {r['processes']:>5} {r['threads']:>7} {r['samples_per_s']:>10.2f} "
              f"{r['vs_1_process']:>8.2f}×")
    atomic_write_csv(args.out, results)
    print(f"table: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

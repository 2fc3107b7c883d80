"""Cost of one full search iteration of the FasterSeg supernet: sampled vs mixed mode, with and without shared kernels.

One iteration = an architecture step (teacher and student: forward + backward on an architecture batch, Adam on
the architecture parameters; FasterSeg's lr 3e-4, betas (0.5, 0.999)) then a weight step (both sets on a weight
batch, SGD lr 0.01, momentum 0.9, wd 5e-4, grad-clip 5). The loss is the sum of the cross-entropies of every head,
as in FasterSeg's search. The architecture step backpropagates into the architecture parameters only
(`backward(inputs=...)`): the weight gradients it would compute are never used.

Each configuration runs in its own subprocess (CPU, 2 threads by default) and reports its own peak RSS
(`ru_maxrss`). A configuration whose warm-up iteration exceeds `--time-cap` seconds, or whose RSS exceeds
`--mem-cap` GB, stops there and is reported as capped.

    .venv/bin/python experiments/bench_supernet.py --out            # full table, writes experiments/results/
    .venv/bin/python experiments/bench_supernet.py --quick          # tiny space, seconds
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["CONFIGS", "FASTERSEG_REFERENCE", "run_config", "main"]

CONFIGS = {
    "sampled": {"mode": "sampled", "shared_kernels": False},
    "sampled+shared": {"mode": "sampled", "shared_kernels": True},
    "mixed": {"mode": "mixed", "shared_kernels": False},
}
# FasterSeg's own search code measured on this machine (DESIGN.md §4): seconds and GB per iteration, batch 2
FASTERSEG_REFERENCE = {(128, 256): (13.0, 5.7), (256, 512): (26.5, 9.4)}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_supernet.csv"


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def _watch_memory(cap_gb: float) -> None:
    def loop() -> None:
        while True:
            rss = _rss_gb()
            if rss > cap_gb:
                print(json.dumps({"capped": f"memory > {cap_gb} GB", "peak_rss_gb": rss}), flush=True)
                os._exit(0)
            time.sleep(0.1)

    threading.Thread(target=loop, daemon=True).start()


def run_config(space: str, mode: str, shared_kernels: bool, hw: tuple[int, int], batch: int, steps: int,
               warmup: int, threads: int, seed: int, time_cap: float, mem_cap: float) -> dict:
    """Run one configuration in this process and return its figures."""
    import torch
    import torch.nn.functional as F

    from search_spaces.fasterseg import Supernet
    from search_spaces.registry import space_spec

    _watch_memory(mem_cap)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    classes = 19
    net = Supernet(space_spec(space), classes, mode=mode, shared_kernels=shared_kernels)
    arch_params, weights = net.arch_parameters(), net.weight_parameters()
    arch_opt = torch.optim.Adam(arch_params, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    w_opt = torch.optim.SGD(weights, lr=0.01, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)

    def batch_() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(batch, 3, *hw, generator=gen)
        return x, torch.randint(0, classes, (batch, *hw), generator=gen)

    def loss_of(x: torch.Tensor, y: torch.Tensor, arch_set: str) -> torch.Tensor:
        out = net(x, arch_set, generator=gen)
        return sum(F.cross_entropy(v, y) for k, v in out.items() if k.startswith("logits_"))

    def iteration() -> float:
        t0 = time.perf_counter()
        xa, ya = batch_()
        arch_opt.zero_grad(set_to_none=True)
        for arch_set in ("teacher", "student"):
            loss_of(xa, ya, arch_set).backward(inputs=net.arch_parameters(arch_set))
        arch_opt.step()
        xw, yw = batch_()
        w_opt.zero_grad(set_to_none=True)
        for arch_set in ("teacher", "student"):
            loss_of(xw, yw, arch_set).backward()
        torch.nn.utils.clip_grad_norm_([p for p in weights if p.grad is not None], 5.0)
        w_opt.step()
        return time.perf_counter() - t0

    times, capped = [], ""
    for i in range(warmup + steps):
        dt = iteration()
        if i >= warmup:
            times.append(dt)
        if dt > time_cap and (i > 0 or dt > 3 * time_cap):  # the first iteration also builds kernels
            capped, times = f"time: iteration {i + 1} took {dt:.1f} s > {time_cap:.0f} s", times or [dt]
            break
    return {
        "params_m": sum(p.numel() for p in weights) / 1e6,
        "median_s": statistics.median(times),
        "iters_timed": len(times),
        "peak_rss_gb": _peak_gb(),
        "capped": capped,
        "load_avg": round(os.getloadavg()[0], 1),  # other processes on the machine skew the timings
    }


def _child(args: argparse.Namespace, name: str, hw: tuple[int, int]) -> dict:
    cfg = CONFIGS[name]
    spec = {"space": args.space, "mode": cfg["mode"], "shared_kernels": cfg["shared_kernels"], "hw": list(hw),
            "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
            "seed": args.seed, "time_cap": args.time_cap, "mem_cap": args.mem_cap}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"capped": f"failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(lines[-1])


def _table(rows: list[dict]) -> str:
    head = f"{'config':<15}{'input':>12}{'params M':>10}{'s/iter':>9}{'peak GB':>9}{'speed-up':>10}{'mem ratio':>10}{'load':>6}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        sp = f"{r['speedup']:.1f}x" if r.get("speedup") else "-"
        mr = f"{r['mem_ratio']:.2f}" if r.get("mem_ratio") else "-"
        lines.append(f"{r['config']:<15}{r['input']:>12}{r.get('params_m', 0):>10.1f}{r.get('median_s', 0):>9.2f}"
                     f"{r.get('peak_rss_gb', 0):>9.2f}{sp:>10}{mr:>10}{r.get('load_avg', 0):>6}  {r.get('capped', '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny space, 64×128, 1 warm-up + 2 steps")
    p.add_argument("--out", nargs="?", const=str(DEFAULT_OUT), default=None, help=f"CSV path (default {DEFAULT_OUT})")
    p.add_argument("--space", default="fasterseg")
    p.add_argument("--sizes", default="128x256,256x512", help="H×W list")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-cap", type=float, default=60.0, help="seconds per iteration before a config is capped")
    p.add_argument("--mem-cap", type=float, default=15.0, help="GB of RSS before a config is capped")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        spec["hw"] = tuple(spec["hw"])
        print(json.dumps(run_config(**spec)), flush=True)
        return 0
    if args.quick:
        args.space, args.sizes, args.steps, args.warmup = "tiny", "64x128", 2, 1
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    for hw in sizes:
        for name in args.configs.split(","):
            res = _child(args, name, hw)
            row = {"config": name, "space": args.space, "input": f"{args.batch}x3x{hw[0]}x{hw[1]}",
                   "threads": args.threads, **res}
            ref = FASTERSEG_REFERENCE.get(hw) if args.space == "fasterseg" else None
            if ref and res.get("median_s"):
                row["speedup"] = ref[0] / res["median_s"]
                row["mem_ratio"] = res["peak_rss_gb"] / ref[1]
            rows.append(row)
            print(_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(_table(rows))
    print("speed-up = FasterSeg s/iter ÷ ours; mem ratio = our peak RSS ÷ FasterSeg's "
          f"(reference: {FASTERSEG_REFERENCE}).")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        keys = ["config", "space", "input", "threads", "params_m", "median_s", "iters_timed", "peak_rss_gb",
                "speedup", "mem_ratio", "load_avg", "capped"]
        with out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

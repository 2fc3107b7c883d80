"""Ablation of the retraining choices on the embedded dataset: distillation variants and the upsamplers.

One student architecture, one recipe, the same iterations for every row, three seeds each; every row distils
from the shipped teacher (``experiments/teachers/``, trained on the same scenes) unless it is teacher-free:

* ``no_kd``          — the student alone (bilinear upsampling everywhere);
* ``pixel_kd``       — + pixel-wise KL from the teacher (Hinton; SKD);
* ``pixel_pairwise`` — + pixel KL and pair-wise affinity on ``feat8`` (Structured KD, CVPR 2019);
* ``cwd``            — channel-wise distillation of the logits (Shu et al., ICCV 2021);
* ``dist``           — DIST: Pearson correlation of class probabilities, inter- and intra-class (NeurIPS 2022);
* ``logit_std``      — pixel KL on per-pixel z-scored logits (logit standardisation, CVPR 2024);
* ``tutor_kd``       — teacher → tutor → student, pixel KL on both edges (the seed paper's tutor-guided KD);
* ``okddip``         — no teacher: the student leads a group of peers that share its early cells (OKDDip,
  AAAI 2020; `distill.online=okddip`, the paper's T = 3 and ramp-up);
* ``pixel_shuffle_random`` / ``pixel_shuffle_icnr`` — ``no_kd`` with every upsampler swapped to PixelShuffle
  (the seed paper's +1.9 / +1.4 mIoU on Cityscapes), its 1×1 conv from PyTorch's initialisation or from ICNR.

Every run is cached (its ``scores.json``) and an interrupted one resumes. Parameters are the deployable network's;
latency is torch eager on CPU (median of repeated runs, ``--threads``) at the data's image size, which is also the
size accuracy is measured at. Training time per epoch is the ``seconds`` of the run's ``metrics.csv`` (all its
phases: the tutor row counts the tutor's epochs too), averaged over seeds, and also given relative to ``no_kd``.

    .venv/bin/python experiments/ablation_distill.py --quick       # smoke run, about a minute
    .venv/bin/python experiments/ablation_distill.py               # the full ablation (see --help)

The full ablation is 3,000 iterations (batch 8, 64×128, the quick start's 1,500 scenes) per run, 30 runs.

Writes ``experiments/results/ablation_distill_v3.csv`` (one row per run: row, seed, miou, params_m, latency_ms,
s_per_epoch) and ``ablation_distill_v3.png`` (``--quick``: ``*_quick.*``; ``--tag T``: ``*_T.*``).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

__all__ = ["ROWS", "default_architecture", "swap_upsamplers", "run_row", "seconds_per_epoch", "add_relative_time",
           "add_latency", "plot_data", "render", "main"]

HERE = Path(__file__).resolve().parent
DEFAULT_ARCH = HERE / "configs" / "ablation_student.arch.json"
RESULTS = HERE / "results"

# row name → (config overrides, upsampler); every row shares the recipe below
ROWS: dict[str, tuple[tuple[str, ...], str]] = {
    "no_kd": ((), "bilinear"),
    "pixel_kd": (("distill.losses=[pixel]",), "bilinear"),
    "pixel_pairwise": (("distill.losses=[pixel,pairwise]",), "bilinear"),
    "cwd": (("distill.losses=[cwd]",), "bilinear"),
    "dist": (("distill.losses=[dist]",), "bilinear"),
    "logit_std": (("distill.losses=[logit_std]",), "bilinear"),
    "tutor_kd": (("distill.losses=[pixel]", "distill.tutor=tutor"), "bilinear"),
    "okddip": (("distill.online=okddip",), "bilinear"),
    "pixel_shuffle_random": (("space.icnr=false",), "pixel_shuffle"),
    "pixel_shuffle_icnr": ((), "pixel_shuffle"),
}
TEACHER = HERE / "teachers" / "digit_scenes_hrnet_w18s.pt"
FULL = ("data.image_size=[64,128]", "data.num_train=1500", "data.num_val=200", "data.batch_size=8",
        "train.epochs=12", "train.iters_per_epoch=250", "train.optimizer=adamw", "train.lr=0.002",
        "train.weight_decay=0.0001", "train.ohem_thresh=1.0", "train.eval_every=4")
QUICK = ("data.num_train=32", "data.num_val=16", "data.image_size=[64,128]", "data.batch_size=4",
         "train.epochs=1", "train.iters_per_epoch=2")


def default_architecture(num_classes: int = 11, fch: int = 8, seed: int = 0):
    """The fixed student: a random architecture of the `fasterseg` space (Fch = `fch`), all upsamplers bilinear."""
    import numpy as np

    from search_spaces.random_arch import random_architecture
    from search_spaces.registry import space_spec

    spec = space_spec("fasterseg", fch=fch, num_classes=num_classes)
    arch = random_architecture(spec, np.random.default_rng(seed), branches=(32, 16), upsample="bilinear")
    return arch.with_meta(source="experiments/ablation_distill.py default_architecture", seed=seed)


def swap_upsamplers(arch: Any, kind: str) -> Any:
    """`arch` with every fusion upsampler and the final ×8 set to `kind`; nothing else changes."""
    branches = tuple(replace(b, upsample=(kind,) * len(b.upsample)) for b in arch.branches)
    return replace(arch, branches=branches, final_upsample=kind)


def _cfg(common: list[str], name: str, seed: int, extra: tuple[str, ...] = ()):
    from nas.config import load_config

    return load_config(None, [*common, f"run.name={name}", f"run.seed={seed}", *extra])


def seconds_per_epoch(cfg: Any) -> float:
    """Training seconds of the run of `cfg` (every phase in its ``metrics.csv``) per student epoch."""
    from nas.trainer import train_dir

    with (train_dir(cfg) / "metrics.csv").open(newline="") as fh:
        seconds = sum(float(r["seconds"]) for r in csv.DictReader(fh))
    return seconds / cfg.train.epochs


def _latency_ms(model_path: str, hw: tuple[int, int], threads: int) -> float:
    import torch

    from nas.latency.measure import TorchBackend
    from nas.models import load_model

    model, _ = load_model(model_path)
    return TorchBackend(torch.device("cpu"), threads=threads, warmup=10, repeats=30).measure(model, [(1, 3, *hw)])


def run_row(row: str, arch_path: Path, teacher: Path, common: list[str], seeds: list[int]) -> dict[str, Any]:
    """Train one row for every seed (cached) and summarise it."""
    from nas.trainer import train_or_reuse

    overrides, _ = ROWS[row]
    if any(o.startswith("distill.losses") for o in overrides):
        overrides = (*overrides, f"distill.teacher={teacher}")
    mious, epoch_s, model_path, params, runs = [], [], "", 0, []
    for seed in seeds:
        t0 = time.perf_counter()
        cfg = _cfg(common, f"{row}_s{seed}", seed, overrides)
        scores = train_or_reuse(cfg, arch_path)
        mious.append(float(scores["miou"]))
        epoch_s.append(seconds_per_epoch(cfg))
        model_path, params = scores["model"], int(scores["params"])
        runs.append({"row": row, "seed": seed, "miou": mious[-1], "params_m": params / 1e6,
                     "s_per_epoch": epoch_s[-1]})
        print(f"  {row} seed {seed}: val mIoU {100 * mious[-1]:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {
        "row": row,
        "seeds": len(seeds),
        "miou_mean": statistics.mean(mious),
        "miou_std": statistics.stdev(mious) if len(mious) > 1 else 0.0,
        "mious": " ".join(f"{m:.4f}" for m in mious),
        "params_m": params / 1e6,
        "epoch_s": statistics.mean(epoch_s),
        "model": model_path,
        "runs": runs,
    }


def add_relative_time(results: list[dict[str, Any]]) -> None:
    """Each row's training time per epoch relative to the ``no_kd`` row (NaN when that row was not run)."""
    base = next((r["epoch_s"] for r in results if r["row"] == "no_kd"), float("nan"))
    for r in results:
        r["time_vs_no_kd"] = r["epoch_s"] / base


def add_latency(results: list[dict[str, Any]], hw: tuple[int, int], threads: int) -> None:
    """Measure each distinct network after all training (rows of one architecture share the figure): two rounds
    over the networks, keeping the lower median, since the first timing in a process pays one-off start-up costs."""
    models = {ROWS[r["row"]][1]: r["model"] for r in results}
    measured = {kind: min(_latency_ms(path, hw, threads) for _ in range(2)) for kind, path in models.items()}
    for r in results:
        r["latency_ms"] = measured[ROWS[r["row"]][1]]
        for run in r["runs"]:
            run["latency_ms"] = r["latency_ms"]


def plot_data(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Bar-plot data: labels, mean and std mIoU in %, latency."""
    return {
        "labels": [r["row"] for r in rows],
        "mean": [100 * r["miou_mean"] for r in rows],
        "std": [100 * r["miou_std"] for r in rows],
        "latency": [r["latency_ms"] for r in rows],
    }


def render(data: dict[str, list[Any]], path: Path, title: str) -> Path:
    """A thin matplotlib renderer of :func:`plot_data`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = range(len(data["labels"]))
    ax.bar(x, data["mean"], yerr=data["std"], capsize=4, color="#4c72b0")
    for i, (m, lat) in enumerate(zip(data["mean"], data["latency"])):
        ax.text(i, m, f"{m:.1f}\n{lat:.1f} ms", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), data["labels"], rotation=15)
    ax.set_ylabel("val mIoU (%)")
    ax.set_title(title)
    top = max((m + s for m, s in zip(data["mean"], data["std"])), default=1.0)
    ax.set_ylim(0, top * 1.25 + 1e-6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=Path, help=f"student architecture (default {DEFAULT_ARCH.relative_to(HERE.parent)}, "
                                              "created on first use)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch of 2 iterations, 2 seeds")
    p.add_argument("--seeds", type=int, help="seeds per row (default 3; --quick 2)")
    p.add_argument("--seed-list", help="comma-separated seeds instead of 0..N-1, e.g. to spread one row's seeds over "
                                       "processes sharing --root (each run is cached; rerun without it to summarise)")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows to run")
    p.add_argument("--teacher", type=Path, default=TEACHER,
                   help="teacher model file (default: the shipped one; --quick trains a tiny HRNet)")
    p.add_argument("--root", type=Path, help="run folder (default runs/ablation_distill[_quick])")
    p.add_argument("--tag", help="results and run-folder suffix, for a run with other --set values (default: none; "
                                 "--quick: quick)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for training and latency")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run (repeatable)")
    args = p.parse_args(argv)

    import torch

    from nas.config import load_config
    from nas.errors import UserError
    from nas.io import atomic_write_csv
    from nas.trainer import train_or_reuse
    from search_spaces.arch import load_architecture, save_architecture

    torch.set_num_threads(args.threads)
    suffix = f"_{args.tag}" if args.tag else ("_quick" if args.quick else "_v3")
    root = args.root or Path("runs") / f"ablation_distill{suffix}"
    seeds = ([int(v) for v in args.seed_list.split(",")] if args.seed_list
             else list(range(args.seeds or (2 if args.quick else 3))))
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        print(f"ablation_distill: unknown row {unknown[0]!r} (known: {', '.join(ROWS)})", file=sys.stderr)
        return 2
    common = [f"run.root={root}", f"run.threads={args.threads}", "data.root=data/digit_scenes" + ("_quick" if args.quick else ""),
              *(QUICK if args.quick else FULL), *args.overrides]
    try:
        num_classes = 11 if load_config(None, common).data.name == "digit_scenes" else 19
        if args.arch is None:
            args.arch = DEFAULT_ARCH
            if not DEFAULT_ARCH.is_file():
                save_architecture(default_architecture(num_classes), DEFAULT_ARCH)
        base = load_architecture(args.arch)
        arch_paths = {}
        for kind in ("bilinear", "pixel_shuffle"):
            arch_paths[kind] = root / f"student_{kind}.arch.json"
            save_architecture(swap_upsamplers(base, kind), arch_paths[kind])
        t0 = time.perf_counter()
        if args.quick:  # a tiny HRNet trained here: the shipped teacher is for the full recipe's scenes
            t_scores = train_or_reuse(_cfg(common, "teacher", 0, ("train.model=teacher", "train.hrnet_preset=tiny")),
                                      None)
            teacher, teacher_miou = Path(t_scores["model"]), float(t_scores["miou"])
        else:
            from nas.models import open_model_file

            teacher = args.teacher
            teacher_miou = float(open_model_file(teacher)[1]["meta"]["val_miou"])
        print(f"teacher {teacher}: val mIoU {100 * teacher_miou:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        results = []
        for row in rows:
            results.append(run_row(row, arch_paths[ROWS[row][1]], teacher, common, seeds))
        add_relative_time(results)
        add_latency(results, tuple(load_config(None, common).data.image_size), args.threads)
    except UserError as exc:
        print(f"ablation_distill: error: {exc}", file=sys.stderr)
        return 2

    print(f"\n{'row':<16} {'val mIoU (%)':>14} {'params (M)':>11} {'latency (ms)':>13} {'s/epoch':>8} {'vs no_kd':>9}")
    for r in results:
        print(f"{r['row']:<16} {100 * r['miou_mean']:7.2f} ± {100 * r['miou_std']:4.2f} {r['params_m']:11.3f} "
              f"{r['latency_ms']:13.2f} {r['epoch_s']:8.2f} {r['time_vs_no_kd']:8.2f}×")
    print(f"teacher val mIoU {100 * teacher_miou:.2f}")
    csv_path = RESULTS / f"ablation_distill{suffix}.csv"
    atomic_write_csv(csv_path, [{**run, "teacher_miou": teacher_miou} for r in results for run in r["runs"]])
    png = render(plot_data(results), RESULTS / f"ablation_distill{suffix}.png",
                 f"distillation ablation ({len(seeds)} seeds, teacher mIoU {100 * teacher_miou:.1f})")
    print(f"results: {csv_path}, {png}, runs in {root}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

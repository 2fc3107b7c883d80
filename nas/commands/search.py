"""`nas search`: latency-constrained teacher–student co-search; writes the derived architectures and plots."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["register", "STRATEGY_CHOICES"]

STRATEGY_CHOICES = ("native", "evolution", "halving", "nni-darts", "nni-gumbel", "nni-random")

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from nas.cli import add_config_args

    p = sub.add_parser("search", help="search an architecture under a latency target (resumable)")
    add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run's last checkpoint")
    p.add_argument("--strategy", choices=STRATEGY_CHOICES,
                   help="native (default: differentiable), evolution (one-shot supernet, then an evolutionary "
                        "search; one student per target), halving (random architectures within the target, "
                        "trained alone briefly, successive halving; one student per target) or an NNI one-shot "
                        "strategy, which needs the `nni` extra (shortcut for --set search.strategy=...)")
    p.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    from nas.cli import config_from_args
    from nas.distributed import is_main
    from nas.io import load_checkpoint
    from nas.lock import job_lock
    from nas.plots import evolution_data, render_evolution, render_trellis, trellis_diagram
    from nas.searcher import run_strategy
    from nas.searcher.common import CHECKPOINT

    if args.strategy:
        args.overrides = [*args.overrides, f"search.strategy={args.strategy}"]
    cfg = config_from_args(args)
    try:
        with job_lock(f"{cfg.run.root}/{cfg.run.name}", "nas search"):
            result = run_strategy(cfg, resume=args.resume)
    except KeyboardInterrupt:
        print(f"nas search: interrupted; the last finished epoch is saved in {cfg.run.root}/{cfg.run.name}/"
              f"{CHECKPOINT}: continue with --resume", file=sys.stderr)
        return 130
    if not is_main():  # under torchrun, rank 0 alone draws the plots and prints the summary
        return 0
    run = result.run_dir
    history = load_checkpoint(run.file(CHECKPOINT)).get("history", [])
    spec = result.student.space
    if history:  # halving has no architecture parameters to trace
        render_evolution(evolution_data(history, spec.ops, spec.widths), run.file("arch_evolution.png"),
                         title=f"search {cfg.run.name}")
    render_trellis(trellis_diagram(result.student), run.file("student_trellis.png"), title="derived student")
    if result.teacher is not None:
        render_trellis(trellis_diagram(result.teacher), run.file("teacher_trellis.png"), title="derived teacher")
    print("\n".join(result.student.summary_lines()))
    if result.student_latency_ms is not None:
        print(f"table latency of the student: {result.student_latency_ms:.2f} ms "
              f"(target {cfg.search.latency_target_ms:g} ms at {cfg.latency.input_hw[0]}x{cfg.latency.input_hw[1]})")
    outputs = "student.arch.json, teacher.arch.json" if result.teacher is not None else "student.arch.json"
    plot = ", arch_evolution.png" if history else ""
    print(f"results: {run.path}/ ({outputs}, metrics.csv{plot})")
    return 0

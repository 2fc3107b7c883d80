"""`nas run`: the whole pipeline in one resumable command (data → latency → search → teacher → student → export).

    nas run --config experiments/configs/quickstart.yaml          # every unfinished stage, then a summary
    nas run --config my.yaml --teacher teacher/model.pt          # distil from this teacher (no teacher stage)
    nas run --config my.yaml --from search                       # redo the search and everything after it
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    from nas.cli import add_config_args
    from nas.pipeline import STAGES

    p = sub.add_parser("run", help="the whole pipeline: data, latency table, search, teacher, student, export "
                                   "(resumable: finished stages are skipped)")
    add_config_args(p)
    p.add_argument("--teacher", metavar="MODEL.pt", help="teacher model file to distil from (distill.teacher)")
    p.add_argument("--teacher-epochs", type=int, metavar="N",
                   help="epochs of a teacher trained here when none is given (default train.epochs)")
    p.add_argument("--from", dest="from_stage", choices=STAGES, metavar="STAGE",
                   help=f"redo this stage and the ones after it ({', '.join(STAGES)}); earlier outputs are "
                        "moved to <run>/previous/")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from nas.cli import config_from_args
    from nas.errors import UserError
    from nas.pipeline import run_pipeline, summary_lines

    if args.teacher_epochs is not None and args.teacher_epochs < 1:
        raise UserError(f"--teacher-epochs must be positive, got {args.teacher_epochs}")
    cfg = config_from_args(args)
    result = run_pipeline(cfg, teacher=args.teacher, from_stage=args.from_stage, teacher_epochs=args.teacher_epochs)
    print("\n".join(summary_lines(result)))
    return 0

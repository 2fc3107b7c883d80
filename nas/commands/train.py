"""`nas train`: retrain a derived student from scratch with distillation, or train a teacher.

    nas train --arch student.arch.json [--teacher teacher/model.pt --kd pixel,pairwise] [--tutor auto]
    nas train --arch student.arch.json --kd okddip     # teacher-free: the student learns within a peer group
    nas train --model teacher                       # the HRNet teacher (train.hrnet_preset)
    nas train --model teacher --arch teacher.arch.json   # a co-searched teacher

The shortcuts map onto config keys: --model → train.model, --teacher → distill.teacher, --kd → distill.losses
(its ``okddip`` → distill.online), --tutor → distill.tutor, --epochs → train.epochs; like --name and --device
they win over --set.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

__all__ = ["register", "overrides_from_args"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from nas.cli import add_config_args

    p = sub.add_parser("train", help="retrain a derived student with distillation, or train a teacher (resumable)")
    p.add_argument("--arch", metavar="ARCH.json", help="architecture file (a student, or a searched teacher)")
    p.add_argument("--model", choices=("student", "teacher"), help="what to train (train.model; default student)")
    p.add_argument("--teacher", metavar="MODEL.pt", help="teacher model file for distillation (distill.teacher)")
    p.add_argument("--tutor", choices=("none", "tutor", "auto"),
                   help="distil through a tutor: auto = as the architecture says (distill.tutor)")
    p.add_argument("--kd", metavar="LOSSES",
                   help="comma-separated KD: teacher losses pixel, logit_std, dist, pairwise, cwd, feature, holistic "
                        "(distill.losses) and/or okddip, teacher-free peers (distill.online); 'none' = off")
    p.add_argument("--epochs", type=int, help="training epochs (train.epochs)")
    add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run's last checkpoint")
    p.set_defaults(func=_train)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides the shortcut flags stand for (values JSON-quoted, so YAML reads them verbatim)."""
    out: list[str] = []
    if args.model:
        out.append(f"train.model={args.model}")
        if args.model == "teacher" and args.arch:
            out.append("train.teacher_arch=searched")
    if args.teacher:
        out.append(f"distill.teacher={json.dumps(args.teacher)}")
    if args.tutor:
        out.append(f"distill.tutor={args.tutor}")
    if args.kd is not None:
        names = [] if args.kd.strip().lower() in ("", "none") else [n.strip() for n in args.kd.split(",") if n.strip()]
        online = "okddip" if "okddip" in names else "none"
        out.append(f"distill.losses={json.dumps([n for n in names if n != 'okddip'])}")
        out.append(f"distill.online={online}")
    if args.epochs is not None:
        out.append(f"train.epochs={args.epochs}")
    return out


def _train(args: argparse.Namespace) -> int:
    from nas.cli import config_from_args
    from nas.distributed import is_main
    from nas.train.loop import CHECKPOINT, run_train, scores_table, train_dir

    args.overrides = [*args.overrides, *overrides_from_args(args)]  # shortcuts win, as --name and --device do
    cfg = config_from_args(args)
    try:
        result = run_train(cfg, args.arch, resume=args.resume)
    except KeyboardInterrupt:
        print(f"nas train: interrupted; the last finished epoch is saved in {train_dir(cfg) / CHECKPOINT}: "
              "continue with --resume", file=sys.stderr)
        return 130
    if not is_main():  # under torchrun, rank 0 alone prints the summary
        return 0
    print(scores_table(result.scores, result.class_names))
    print(f"deployable model: {result.model_path} ({result.params / 1e6:.3f} M parameters)")
    print(f"val scores: {result.scores_path}")
    print(f"run folder: {result.run_dir.path}/ ({', '.join(p.name for p in result.files if p.is_file())})")
    return 0

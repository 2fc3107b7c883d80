"""`nas train`: retrain a derived student from scratch with distillation, or train a teacher.

    nas train --arch student.arch.json [--teacher teacher/model.pt --kd pixel,pairwise] [--tutor auto]
    nas train --arch student.arch.json --kd okddip     # teacher-free: the student learns within a peer group
    nas train --model teacher                       # the HRNet teacher (train.hrnet_preset)
    nas train --model teacher --arch teacher.arch.json   # a co-searched teacher
    nas train --baseline bisenetv2 --width 0.5 [--teacher teacher/model.pt --kd pixel]   # a hand-designed baseline

The shortcuts map onto config keys: --model → train.model, --baseline / --width / --depth → train.baseline /
train.baseline_width / train.baseline_depth (and train.model=baseline), --teacher → distill.teacher, --kd →
distill.losses (its ``okddip`` → distill.online), --tutor → distill.tutor, --epochs → train.epochs; like --name
and --device they win over --set.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from nas.errors import UserError

__all__ = ["register", "overrides_from_args"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from nas.cli import add_config_args

    p = sub.add_parser("train", help="retrain a derived student with distillation, or train a teacher or a "
                                     "hand-designed baseline (resumable)")
    p.add_argument("--arch", metavar="ARCH.json", help="architecture file (a student, or a searched teacher)")
    p.add_argument("--model", choices=("student", "teacher", "baseline"),
                   help="what to train (train.model; default student); baseline: a hand-designed network")
    p.add_argument("--baseline", metavar="FAMILY",
                   help="hand-designed family for --model baseline: bisenetv2, ppliteseg, ddrnet (train.baseline; "
                        "implies --model baseline)")
    p.add_argument("--width", type=float, metavar="W",
                   help="the baseline's channel multiplier (train.baseline_width; implies --model baseline)")
    p.add_argument("--depth", type=float, metavar="D",
                   help="the baseline's repeated-block multiplier (train.baseline_depth; implies --model baseline)")
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
    sizing = {"baseline": getattr(args, "baseline", None), "width": getattr(args, "width", None),
              "depth": getattr(args, "depth", None)}
    given = [f"--{k}" for k, v in sizing.items() if v is not None]
    if given and args.model not in (None, "baseline"):
        raise UserError(f"{'/'.join(given)} only apply to --model baseline (a hand-designed network), "
                        f"not to --model {args.model}")
    if given and not args.model:
        out.append("train.model=baseline")
    if sizing["baseline"] is not None:
        out.append(f"train.baseline={json.dumps(sizing['baseline'])}")
    if sizing["width"] is not None:
        out.append(f"train.baseline_width={sizing['width']!r}")
    if sizing["depth"] is not None:
        out.append(f"train.baseline_depth={sizing['depth']!r}")
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
    from nas.lock import job_lock
    from nas.trainer.loop import CHECKPOINT, run_train, scores_table, train_dir

    args.overrides = [*args.overrides, *overrides_from_args(args)]  # shortcuts win, as --name and --device do
    cfg = config_from_args(args)
    try:
        with job_lock(f"{cfg.run.root}/{cfg.run.name}", "nas train"):
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

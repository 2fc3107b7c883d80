"""`nas study`: Optuna studies over the search's hyperparameters, and the tools to explore them.

    nas study run --study NAME [--storage URL] --n-trials N [--config FILE] [--space FILE] [--set k=v]
    nas study list [--storage URL]
    nas study show NAME            # every trial: parameters, objectives, constraint, state; * = Pareto-optimal
    nas study pareto NAME          # the Pareto-optimal trials with their architectures and folders
    nas study plot NAME --kind pareto|history|importance|parallel [--out FILE]
    nas study export NAME --trial N --format onnx|torchscript|json [--out DIR]
    nas study dashboard NAME [--host 127.0.0.1] [--port 8080]

The storage defaults to ``sqlite:///<study.root>/studies.db`` (``runs/studies/studies.db``); pass
``journal:FILE`` for a journal file or ``postgresql+psycopg2://...`` for many workers on many machines.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nas.errors import UserError

__all__ = ["register"]

log = logging.getLogger(__name__)


def _storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL",
                   help="sqlite:///FILE, journal:FILE or postgresql+psycopg2://USER@HOST/DB "
                        "(default: sqlite:///runs/studies/studies.db)")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML file with differences from the defaults")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override one config key, e.g. --set study.sampler=tpe (repeatable)")


def register(sub: argparse._SubParsersAction) -> None:
    from nas.studies.explore import PLOT_KINDS, TARGETS

    p = sub.add_parser("study", help="Optuna studies: search hyperparameters for mIoU vs measured latency")
    ssub = p.add_subparsers(dest="study_command", metavar="ACTION")

    r = ssub.add_parser("run", help="run trials (search → retrain → measure); rerun to add trials")
    r.add_argument("--study", required=True, metavar="NAME", help="study name (created if new, else extended)")
    _storage_arg(r)
    r.add_argument("--n-trials", type=int, required=True, metavar="N", help="trials this worker runs")
    r.add_argument("--space", metavar="FILE", help="hyperparameter space YAML (default: the built-in space, "
                                                   "as in experiments/configs/study_space.yaml)")
    r.add_argument("--worker", type=int, default=0, metavar="K",
                   help="this worker's index when several start at once (seeds its sampler apart)")
    r.add_argument("--device", help="auto | cpu | cuda | cuda:N (shortcut for --set run.device=...)")
    _config_args(r)
    r.set_defaults(func=_run)

    ls = ssub.add_parser("list", help="the studies in a storage")
    _storage_arg(ls)
    ls.set_defaults(func=_list)

    for name, helptext, func in (("show", "a table of all trials", _show),
                                 ("pareto", "the Pareto-optimal trials", _pareto)):
        s = ssub.add_parser(name, help=helptext)
        s.add_argument("name", metavar="NAME")
        s.add_argument("--csv", metavar="FILE", help="also write the table as CSV (one row per trial)")
        _storage_arg(s)
        s.set_defaults(func=func)

    pl = ssub.add_parser("plot", help="a PNG of the study (optuna.visualization.matplotlib)")
    pl.add_argument("name", metavar="NAME")
    pl.add_argument("--kind", choices=PLOT_KINDS, default="pareto")
    pl.add_argument("--target", choices=tuple(TARGETS), default="miou",
                    help="objective of the history / importance / parallel plots")
    pl.add_argument("--out", metavar="FILE.png", help="default: <study folder>/<kind>.png")
    _storage_arg(pl)
    pl.set_defaults(func=_plot)

    ex = ssub.add_parser("export", help="rebuild a trial's model from its artifact and export it (nas export)")
    ex.add_argument("name", metavar="NAME")
    ex.add_argument("--trial", type=int, required=True, metavar="N")
    ex.add_argument("--format", dest="formats", action="append", choices=("onnx", "torchscript", "json"),
                    required=True, help="repeatable")
    ex.add_argument("--out", metavar="DIR", help="default: <study folder>/trial_<N>/export")
    ex.add_argument("--input", metavar="HxW", help="export input size (default: the model file's)")
    ex.add_argument("--artifacts", metavar="DIR", help="artifact folder (default: the one the study recorded)")
    _storage_arg(ex)
    _config_args(ex)
    ex.set_defaults(func=_export)

    d = ssub.add_parser("dashboard", help="serve optuna-dashboard for the study's storage and artifacts")
    d.add_argument("name", metavar="NAME")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--artifacts", metavar="DIR", help="artifact folder (default: the one the study recorded)")
    _storage_arg(d)
    d.set_defaults(func=_dashboard)

    p.set_defaults(func=lambda args: _help(p))


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _default_url(args: argparse.Namespace, root: str | None = None) -> str:
    from nas.config import StudyConfig
    from nas.studies.storage import default_storage_url

    return args.storage or default_storage_url(root or StudyConfig().root)


def _run(args: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.studies.explore import format_table, trial_rows
    from nas.studies.space import load_space
    from nas.studies.storage import describe_url
    from nas.studies.study import run_study

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"run.device={args.device}")
    cfg = load_config(args.config, overrides)
    space = load_space(args.space)
    url = _default_url(args, cfg.study.root)
    try:
        handle = run_study(args.study, url, cfg, space, args.n_trials, worker=args.worker)
    except KeyboardInterrupt:
        print(f"nas study: interrupted; rerun the same command to add trials to study {args.study!r}", flush=True)
        return 130
    rows = trial_rows(handle.study)
    mine = [r for r in rows if r["number"] in handle.ran]
    done = sum(r["state"] == "COMPLETE" for r in rows)
    failed = sum(r["state"] == "FAIL" for r in rows)
    print(format_table(mine))
    print(f"study {args.study!r} in {describe_url(url)}: {len(rows)} trials, {done} complete, {failed} failed; "
          f"trial folders under {handle.study_dir}/, artifacts in {handle.artifacts.base_path}/")
    storage = f" --storage {describe_url(url)}" if args.storage else ""
    print(f"next: nas study show {args.study}{storage}   |   nas study plot {args.study} --kind pareto{storage}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from nas.studies.explore import study_summaries
    from nas.studies.storage import describe_url, open_storage

    url = _default_url(args)
    rows = study_summaries(open_storage(url, create=False))
    if not rows:
        print(f"no studies in {describe_url(url)}")
        return 0
    width = max(len("study"), *(len(r["name"]) for r in rows))
    print(f"{'study':<{width}}  trials  complete  running  failed  pareto  started")
    for r in rows:
        pareto = "-" if r["pareto"] is None else str(r["pareto"])
        print(f"{r['name']:<{width}}  {r['trials']:>6}  {r['complete']:>8}  {r['running']:>7}  {r['failed']:>6}  "
              f"{pareto:>6}  {r['started']}")
    return 0


def _open(args: argparse.Namespace):
    from nas.studies.study import open_existing

    return open_existing(args.name, _default_url(args), getattr(args, "artifacts", None))


def _write_csv(args: argparse.Namespace, rows: list[dict]) -> None:
    """`--csv FILE`: the rows shown, one per trial (objectives, parameters, state), written atomically."""
    if getattr(args, "csv", None):
        from nas.io import atomic_write_csv

        flat = [{**{k: v for k, v in r.items() if k != "params"}, **r["params"]} for r in rows]
        print(f"table: {atomic_write_csv(args.csv, flat)}")


def _show(args: argparse.Namespace) -> int:
    from nas.studies.explore import format_table, trial_rows

    handle = _open(args)
    rows = trial_rows(handle.study)
    if not rows:
        print(f"study {args.name!r} has no trials yet")
        return 0
    print(format_table(rows))
    _write_csv(args, rows)
    budget = handle.study.user_attrs.get("nas", {}).get("latency_budget_ms", 0)
    done = sum(r["state"] == "COMPLETE" for r in rows)
    print(f"{len(rows)} trials, {done} complete; * = Pareto-optimal (val_mIoU up, latency_ms down)"
          + (f"; constraint = latency - {budget:g} ms budget, <= 0 is feasible" if budget else ""))
    return 0


def _pareto(args: argparse.Namespace) -> int:
    from nas.studies.explore import format_table, trial_rows

    handle = _open(args)
    rows = sorted((r for r in trial_rows(handle.study) if r["pareto"]), key=lambda r: r["latency_ms"])
    if not rows:
        print(f"study {args.name!r} has no complete (feasible) trial yet")
        return 0
    print(format_table(rows))
    _write_csv(args, rows)
    for r in rows:
        print(f"trial {r['number']}: arch {r['arch']}  folder {r['run_dir']}")
    print(f"export one: nas study export {args.name} --trial {rows[0]['number']} --format onnx")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from nas.studies.explore import render_plot

    handle = _open(args)
    out = Path(args.out) if args.out else handle.study_dir / f"{args.kind}.png"
    try:
        path = render_plot(handle.study, args.kind, out, target=args.target)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"{args.kind} plot of study {args.name!r}: {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from optuna.trial import TrialState

    from nas.cli import build_parser
    from nas.studies.study import download_artifact, find_trial

    handle = _open(args)
    trial = find_trial(handle.study, args.trial)
    if trial.state != TrialState.COMPLETE:
        raise UserError(f"trial {args.trial} of study {args.name!r} is {trial.state.name}, not COMPLETE: "
                        "it has no trained model to export")
    out = Path(args.out) if args.out else handle.study_dir / f"trial_{args.trial}" / "export"
    model = download_artifact(handle, trial, "model.pt", out)
    print(f"downloaded trial {args.trial}'s model file: {model}")
    argv = ["export", "--checkpoint", str(model), "--out", str(out)]
    for fmt in args.formats:
        argv += ["--format", fmt]
    if args.input:
        argv += ["--input", args.input]
    if args.config:
        argv += ["--config", args.config]
    for item in args.overrides:
        argv += ["--set", item]
    export_args = build_parser().parse_args(argv)
    return int(export_args.func(export_args) or 0)


def _dashboard(args: argparse.Namespace) -> int:
    from nas.studies.dashboard import require_dashboard, serve

    require_dashboard()
    handle = _open(args)
    try:
        serve(handle, host=args.host, port=args.port)
    except KeyboardInterrupt:
        print("dashboard stopped", flush=True)
    return 0

"""Looking at a study: its trials as rows (for the CLI table and pandas), the Pareto front, plots.

The data functions (:func:`trial_rows`, :func:`pareto_numbers`, :func:`load_frame`) are pure reads of the
storage; :func:`render_plot` is a thin wrapper over `optuna.visualization.matplotlib` that writes the PNG
atomically.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.io import atomic_write_bytes
from nas.studies.objective import CONSTRAINT, OBJECTIVES

__all__ = ["PLOT_KINDS", "TARGETS", "pareto_numbers", "trial_rows", "format_table", "load_frame", "render_plot",
           "study_summaries"]

PLOT_KINDS = ("pareto", "history", "importance", "parallel")
TARGETS = {"miou": 0, "latency": 1}


def pareto_numbers(study: Any) -> set[int]:
    """Numbers of the Pareto-optimal complete trials (feasible ones only when the study has a constraint)."""
    return {t.number for t in study.best_trials}


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One dict per trial: number, state, objectives, constraint, Pareto flag, retry origin, parameters."""
    front = pareto_numbers(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = list(t.values) if t.values is not None else [math.nan] * len(OBJECTIVES)
        constraint = t.constraints.get(CONSTRAINT)
        rows.append({
            "number": t.number,
            "state": t.state.name,
            OBJECTIVES[0]: values[0],
            OBJECTIVES[1]: values[1],
            "constraint": constraint,
            "feasible": constraint is None or constraint <= 0,
            "pareto": t.number in front,
            "retry_of": t.system_attrs.get("failed_trial"),
            "params": dict(t.params),
            "run_dir": t.user_attrs.get("run_dir"),
            "arch": (t.user_attrs.get("summary") or {}).get("arch"),
        })
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    return str(value)


_SHORT = {"latency_target_ms": "lat_T", "latency_weight": "lat_w", "search_kd_weight": "s_kd_w",
          "pairwise_weight": "pair_w", "kd_weight": "kd_w"}


def format_table(rows: list[dict[str, Any]], params: bool = True) -> str:
    """A plain-text table: '*' marks the Pareto-optimal trials; constraint = latency − budget (ms, ≤ 0 ok)."""
    names: list[str] = []
    if params:
        for r in rows:
            names.extend(k for k in r["params"] if k not in names)
    header = ["", "trial", "state", "val_mIoU", "latency_ms", "constraint", *[_SHORT.get(n, n) for n in names]]
    body = []
    for r in rows:
        line = ["*" if r["pareto"] else "", str(r["number"]) + (f"<{r['retry_of']}" if r["retry_of"] is not None
                                                                 else ""),
                r["state"], _cell(r[OBJECTIVES[0]]), _cell(r[OBJECTIVES[1]]), _cell(r["constraint"])]
        line += [_cell(r["params"].get(n)) for n in names]
        body.append(line)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    out = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths)).rstrip()]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in body]
    return "\n".join(out)


def study_summaries(storage: Any) -> list[dict[str, Any]]:
    """Per study in the storage: name, trials by state, Pareto size, start time."""
    import optuna
    from optuna.trial import TrialState

    out = []
    for name in sorted(optuna.get_all_study_names(storage)):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
        multi = len(study.directions) == len(OBJECTIVES)
        starts = [t.datetime_start for t in trials if t.datetime_start is not None]
        out.append({"name": name, "trials": len(trials), "complete": counts["COMPLETE"], "running": counts["RUNNING"],
                    "failed": counts["FAIL"], "waiting": counts["WAITING"],
                    "pareto": len(pareto_numbers(study)) if multi else None,
                    "started": min(starts).strftime("%Y-%m-%d %H:%M") if starts else "-"})
    return out


def load_frame(study_name: str, storage: str | Any | None = None) -> Any:
    """The study's trials as a pandas DataFrame (one row per trial, flat columns: `values_val_miou`,
    `values_latency_ms`, `params_*`, `user_attrs_*`, `state`, ...) plus `pareto` and `constraint`, for
    notebooks. `storage` is a URL or an Optuna storage; None = the default SQLite file under `runs/studies`."""
    from nas.config import StudyConfig
    from nas.studies.storage import default_storage_url, load_study, open_storage

    url = storage if isinstance(storage, str) else ""
    if storage is None:
        url = default_storage_url(StudyConfig().root)
    backend = open_storage(url, create=False) if url else storage
    study = load_study(study_name, backend, url)
    frame = study.trials_dataframe(multi_index=False)
    front = pareto_numbers(study)
    constraints = {t.number: t.constraints.get(CONSTRAINT) for t in study.get_trials(deepcopy=False)}
    frame["pareto"] = frame["number"].map(lambda n: n in front)
    frame["constraint"] = frame["number"].map(constraints)
    return frame


def render_plot(study: Any, kind: str, path: str | Path, target: str = "miou") -> Path:
    """Draw one of :data:`PLOT_KINDS` with `optuna.visualization.matplotlib` and write it as PNG atomically.

    `pareto` shows both objectives (infeasible trials greyed); the others show one objective (`target`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState

    if kind not in PLOT_KINDS:
        raise UserError(f"unknown plot kind {kind!r} (known: {', '.join(PLOT_KINDS)})")
    if target not in TARGETS:
        raise UserError(f"unknown plot target {target!r} (known: {', '.join(TARGETS)})")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    need = 2 if kind in ("importance", "parallel") else 1
    if len(complete) < need:
        raise UserError(f"a {kind} plot needs at least {need} complete trial(s); study {study.study_name!r} has "
                        f"{len(complete)}")
    idx = TARGETS[target]
    name = OBJECTIVES[idx]
    vis = optuna.visualization.matplotlib
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
        try:
            if kind == "pareto":
                ax = vis.plot_pareto_front(study, target_names=list(OBJECTIVES))
            elif kind == "history":
                ax = vis.plot_optimization_history(study, target=lambda t: t.values[idx], target_name=name)
            elif kind == "importance":
                ax = vis.plot_param_importances(study, target=lambda t: t.values[idx], target_name=name)
            else:
                ax = vis.plot_parallel_coordinate(study, target=lambda t: t.values[idx], target_name=name)
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"cannot draw the {kind} plot of study {study.study_name!r}: "
                            f"{str(exc).splitlines()[0][:200]}") from None
    first = ax.flat[0] if hasattr(ax, "flat") else ax
    fig = first.figure
    fig.set_size_inches(8, 5.5)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())

"""Creating, resuming and running a study; finding a trial and downloading its artifacts.

A study is two-objective (val mIoU ↑, measured latency ↓), sampled by NSGA-II (default) or TPE. Rerunning
`nas study run` with the same name adds trials to it (``load_if_exists``). What a study was started with —
its hyperparameter space, the base config's hash, the folders of its trials and artifacts — is stored in its
user attributes, so `show`, `export` and the dashboard find everything from the storage alone.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.config import ExperimentConfig, config_hash, to_dict
from nas.errors import UserError
from nas.io import atomic_write_stream
from nas.studies.objective import DIRECTIONS, OBJECTIVES, TrialObjective
from nas.studies.space import SearchSpace
from nas.studies.storage import (
    AtomicArtifactStore,
    artifact_dir,
    describe_url,
    load_study,
    open_storage,
    safe_artifact_name,
)

__all__ = ["StudyHandle", "check_study_name", "make_sampler", "open_for_run", "open_existing", "run_study",
           "find_trial", "download_artifact"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class StudyHandle:
    """A loaded study with the storage object, its URL, its trial folder and its artifact store."""

    study: Any
    storage: Any
    url: str
    study_dir: Path
    artifacts: AtomicArtifactStore
    ran: list[int] = field(default_factory=list)  # numbers of the trials this process ran


def check_study_name(name: str) -> str:
    """Study names become folder names: letters, digits, '.', '_', '-' only."""
    if not _NAME.match(name or ""):
        raise UserError(f"study name {name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    return name


def make_sampler(kind: str, seed: int, population: int) -> Any:
    """NSGA-II (population `population`) or multi-objective TPE, seeded; both read `trial.set_constraint`."""
    import optuna

    if kind == "nsga2":
        if population < 2:
            raise UserError(f"study.population must be at least 2, got {population}")
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise UserError(f"unknown study.sampler {kind!r} (known: nsga2, tpe)")


def _worker_seed(study_seed: int, n_existing: int, worker: int) -> int:
    """The sampler's seed: a resumed study or a second worker must not replay the first one's draws."""
    return int(np.random.SeedSequence([study_seed & 0xFFFFFFFF, n_existing, worker]).generate_state(1)[0])


def open_for_run(name: str, url: str, cfg: ExperimentConfig, space: SearchSpace, worker: int = 0) -> StudyHandle:
    """Create the study (or load it: rerunning adds trials) with a sampler seeded for this worker."""
    import optuna

    check_study_name(name)
    sc = cfg.study
    if sc.heartbeat_s < 1 or sc.grace_s <= sc.heartbeat_s or sc.retries < 0:
        raise UserError("study.heartbeat_s must be ≥ 1, study.grace_s above it and study.retries ≥ 0, got "
                        f"{sc.heartbeat_s}, {sc.grace_s}, {sc.retries}")
    if sc.latency_budget_ms < 0:
        raise UserError(f"study.latency_budget_ms cannot be negative, got {sc.latency_budget_ms}")
    storage = open_storage(url, create=True, heartbeat_s=sc.heartbeat_s, grace_s=sc.grace_s, retries=sc.retries)
    n_existing = 0
    try:
        if name in optuna.get_all_study_names(storage):
            n_existing = len(optuna.load_study(study_name=name, storage=storage).trials)
        sampler = make_sampler(sc.sampler, _worker_seed(cfg.run.seed, n_existing, worker), sc.population)
        study = optuna.create_study(study_name=name, storage=storage, directions=list(DIRECTIONS), sampler=sampler,
                                    load_if_exists=True)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot create study {name!r} in {describe_url(url)}: {str(exc).splitlines()[0][:200]}") \
            from None
    if [d.name.lower() for d in study.directions] != list(DIRECTIONS):
        raise UserError(f"study {name!r} in {describe_url(url)} was not made by `nas study run` (its directions are "
                        f"{[d.name.lower() for d in study.directions]}): choose another --study")
    study_dir = Path(sc.root).resolve() / name
    art_dir = artifact_dir(url, sc.artifacts, sc.root).resolve()
    attrs = study.user_attrs
    if "nas" not in attrs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is experimental
            study.set_metric_names(list(OBJECTIVES))
        study.set_user_attr("nas", {
            "study_dir": str(study_dir),
            "artifacts": str(art_dir),
            "seed": cfg.run.seed,
            "sampler": sc.sampler,
            "latency_budget_ms": sc.latency_budget_ms,
            "config_hash": config_hash(cfg),
            "space": space.to_dict(),
        })
        study.set_user_attr("config", to_dict(cfg))
    else:
        known = attrs["nas"]
        if known.get("space") != space.to_dict():
            log.warning("study %s was started with another hyperparameter space; new trials use this one", name)
        if known.get("config_hash") != config_hash(cfg):
            log.warning("study %s was started with another base config (hash %s, now %s)", name,
                        known.get("config_hash"), config_hash(cfg))
        study_dir = Path(known.get("study_dir", study_dir))
        art_dir = Path(sc.artifacts) if sc.artifacts else Path(known.get("artifacts", art_dir))
    study_dir.mkdir(parents=True, exist_ok=True)
    return StudyHandle(study, storage, url, study_dir, AtomicArtifactStore(art_dir))


def open_existing(name: str, url: str, artifacts: str | None = None) -> StudyHandle:
    """Load an existing study (read side: show, pareto, plot, export, dashboard); nothing is created."""
    storage = open_storage(url, create=False)
    study = load_study(name, storage, url)
    known = study.user_attrs.get("nas", {})
    study_dir = Path(known.get("study_dir", name))
    art_dir = Path(artifacts) if artifacts else Path(known.get("artifacts", artifact_dir(url, None, study_dir.parent)))
    return StudyHandle(study, storage, url, study_dir, AtomicArtifactStore(art_dir))


def run_study(name: str, url: str, cfg: ExperimentConfig, space: SearchSpace, n_trials: int,
              worker: int = 0) -> StudyHandle:
    """Run `n_trials` more trials of study `name` in this process; a trial that fails with a UserError (e.g.
    a diverged search) is recorded as FAIL and the study goes on."""
    if n_trials < 1:
        raise UserError(f"--n-trials must be at least 1, got {n_trials}")
    space.check(cfg)
    handle = open_for_run(name, url, cfg, space, worker)
    objective = TrialObjective(cfg, space, handle.study_dir, handle.artifacts)
    handle.study.optimize(objective, n_trials=n_trials, catch=(UserError,), gc_after_trial=True,
                          callbacks=[lambda study, trial: handle.ran.append(trial.number)])
    return handle


def find_trial(study: Any, number: int) -> Any:
    """The frozen trial `number`; a missing one is a UserError naming the range."""
    for trial in study.get_trials(deepcopy=False):
        if trial.number == number:
            return trial
    n = len(study.trials)
    raise UserError(f"study {study.study_name!r} has no trial {number} (trials 0..{n - 1})" if n else
                    f"study {study.study_name!r} has no trials yet")


def download_artifact(handle: StudyHandle, trial: Any, name: str, dest_dir: str | Path) -> Path:
    """Download the trial's artifact called `name` into `dest_dir` (atomically); its stored file name and id are
    checked to be plain names first, so a tampered storage can neither write outside `dest_dir` nor read outside
    the artifact store."""
    from optuna.artifacts import get_all_artifact_meta
    from optuna.artifacts.exceptions import ArtifactNotFound

    metas = [m for m in get_all_artifact_meta(trial, storage=handle.storage) if m.filename == name]
    if not metas:
        have = sorted({m.filename for m in get_all_artifact_meta(trial, storage=handle.storage)})
        raise UserError(f"trial {trial.number} of study {handle.study.study_name!r} has no artifact {name!r} "
                        f"(it has: {', '.join(have) or 'none'})")
    meta = metas[-1]
    target = Path(dest_dir) / safe_artifact_name(meta.filename)
    try:
        source = handle.artifacts.open_reader(meta.artifact_id)  # before anything is created at the destination
    except ArtifactNotFound:
        raise UserError(f"artifact {name!r} of trial {trial.number} is missing from {handle.artifacts.base_path} "
                        "(pass --artifacts DIR where the study's artifacts are)") from None
    with source:
        return atomic_write_stream(target, source)

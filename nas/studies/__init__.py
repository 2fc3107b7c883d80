"""Optuna studies over the search's hyperparameters: one trial = search → derive → retrain → measure.

Objectives are val mIoU (↑) and measured latency (↓), with the latency budget as a trial constraint; each
trial's architecture, metrics and model file are Optuna artifacts. `nas study` drives it from the command
line; :func:`load_frame` gives a study's trials as a pandas DataFrame for notebooks.
"""

from nas.studies.explore import PLOT_KINDS, format_table, load_frame, pareto_numbers, render_plot, trial_rows
from nas.studies.objective import DIRECTIONS, OBJECTIVES, TrialObjective, trial_seed
from nas.studies.space import DEFAULT_SPACE, Param, SearchSpace, load_space
from nas.studies.storage import AtomicArtifactStore, default_storage_url, open_storage, safe_artifact_name
from nas.studies.study import StudyHandle, download_artifact, open_existing, run_study

__all__ = [
    "DEFAULT_SPACE",
    "DIRECTIONS",
    "OBJECTIVES",
    "PLOT_KINDS",
    "AtomicArtifactStore",
    "Param",
    "SearchSpace",
    "StudyHandle",
    "TrialObjective",
    "default_storage_url",
    "download_artifact",
    "format_table",
    "load_frame",
    "load_space",
    "open_existing",
    "open_storage",
    "pareto_numbers",
    "render_plot",
    "run_study",
    "safe_artifact_name",
    "trial_rows",
    "trial_seed",
]

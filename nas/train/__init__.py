"""Retraining: a derived student (or a teacher) from scratch, with distillation teacher → tutor → student.

The names below are loaded on first use: `nas.evaluate` imports `nas.train.losses`, so importing the training
loop eagerly here would make that import circular.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CHECKPOINT", "TrainResult", "run_train", "scores_table", "train_or_reuse", "train_dir", "Phase", "kd_terms",
           "load_teacher", "plan_phases", "tutor_path_for"]

_WHERE = {
    "CHECKPOINT": "nas.train.loop",
    "TrainResult": "nas.train.loop",
    "run_train": "nas.train.loop",
    "scores_table": "nas.train.loop",
    "train_or_reuse": "nas.train.loop",
    "train_dir": "nas.train.loop",
    "Phase": "nas.train.chain",
    "kd_terms": "nas.train.chain",
    "load_teacher": "nas.train.chain",
    "plan_phases": "nas.train.chain",
    "tutor_path_for": "nas.train.chain",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'nas.train' has no attribute {name!r}")

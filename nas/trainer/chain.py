"""What a training job trains, in which order, and from whom: the distillation chain teacher → tutor → student.

A job is a list of :class:`Phase` s. A plain retrain or a teacher's training is one phase. With KD losses the
phase's teacher is a frozen model file (`distill.teacher`). With the tutor chain (the seed paper's
tutor-guided distillation) there are two phases: the tutor learns from the teacher, then, frozen, teaches the
student; each edge uses the configured losses.

The KD terms read named outputs of both networks: pixel KL and channel-wise divergence on ``logits``, pair-wise
affinity and feature mimicking (through a 1×1 connector) on ``feat8`` of both sides, holistic adversarial on
``logits`` (with the image).

Teacher-free online distillation (`distill.online = "okddip"`, OKDDip: Chen et al., AAAI 2020) trains the student as the leader of
a :class:`~nas.distill.okddip.PeerGroup`; it needs no teacher and may be combined with the teacher's losses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from nas.config import DistillConfig, ExperimentConfig
from nas.distill import KD_LOSSES, KDTerm, OKDDipCriterion, PeerGroup
from nas.distill.okddip import OKDDIP_RAMPUP_SHARE
from nas.errors import UserError
from nas.models import load_model
from search_spaces.arch import Architecture
from search_spaces.builder import SegNet

__all__ = ["Phase", "kd_terms", "load_teacher", "tutor_path_for", "plan_phases", "check_online", "online_peers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """One stage of a training job: which model it trains (`role`: student | teacher | tutor | baseline), for how
    many epochs, and what teaches it (`teacher_from`: "file" = the teacher model file, "tutor" = the frozen tutor
    of the previous phase, None = no distillation)."""

    role: str
    epochs: int
    teacher_from: str | None = None


def kd_terms(dc: DistillConfig, num_classes: int, ignore_index: int = 255) -> list[KDTerm]:
    """The KD terms `dc.losses` names, with the config's weights, temperatures and warm-up."""
    unknown = [name for name in dc.losses if name not in KD_LOSSES]
    if "okddip" in unknown:
        raise UserError("okddip is teacher-free online distillation, not a teacher loss: set distill.online=okddip "
                        "(or pass --kd okddip)")
    if unknown:
        raise UserError(f"unknown KD loss '{unknown[0]}' in distill.losses (known: {', '.join(KD_LOSSES)})")
    if len(set(dc.losses)) != len(dc.losses):
        raise UserError(f"distill.losses names a loss twice: {list(dc.losses)}")
    warm = float(dc.warmup_epochs)
    specs: dict[str, dict[str, Any]] = {
        "pixel": dict(student_key="logits", teacher_key="logits", weight=dc.pixel_weight,
                      kwargs={"temperature": dc.temperature, "ignore_index": ignore_index}),
        "logit_std": dict(student_key="logits", teacher_key="logits", weight=dc.logit_std_weight,
                          kwargs={"temperature": dc.logit_std_temperature, "ignore_index": ignore_index}),
        "dist": dict(student_key="logits", teacher_key="logits", weight=dc.dist_weight,
                     kwargs={"temperature": dc.dist_temperature, "beta": dc.dist_beta, "gamma": dc.dist_gamma,
                             "ignore_index": ignore_index}),
        "pairwise": dict(student_key="feat8", teacher_key="feat8", weight=dc.pairwise_weight,
                         kwargs={"pool": dc.pairwise_pool}),
        "cwd": dict(student_key="logits", teacher_key="logits", weight=dc.cwd_weight,
                    kwargs={"temperature": dc.cwd_temperature}),
        "feature": dict(student_key="feat8", teacher_key="feat8", weight=dc.feature_weight),
        "holistic": dict(student_key="logits", teacher_key="logits", weight=dc.holistic_weight,
                         kwargs={"num_classes": num_classes, "lr": dc.holistic_lr}),
    }
    terms = []
    for name in dc.losses:
        spec = specs.get(name, {"student_key": "logits", "teacher_key": "logits"})
        terms.append(KDTerm(name, warmup_epochs=warm, **spec))
    return terms


def load_teacher(path: str | Path, num_classes: int, map_location: str = "cpu",
                 class_names: tuple[str, ...] | list[str] | None = None,
                 dataset_version: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load a teacher model file and check it was trained for this dataset: the number of classes, their names
    and (where both record one) the dataset version must match; a mismatch is a one-line UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"teacher model file not found: {p}")
    model, info = load_model(p, map_location=map_location)
    if int(info["num_classes"]) != num_classes:
        raise UserError(
            f"teacher {p} predicts {info['num_classes']} classes but the dataset has {num_classes}"
        )
    recorded = list(info.get("class_names") or [])
    if class_names is not None and recorded and recorded != list(class_names):
        diff = next(i for i, (a, b) in enumerate(zip(recorded, class_names)) if a != b)
        raise UserError(f"teacher {p} was trained on other classes: its class {diff} is {recorded[diff]!r}, "
                        f"the dataset's is {list(class_names)[diff]!r}")
    theirs = (info.get("meta") or {}).get("dataset_version")
    if dataset_version and theirs and theirs != dataset_version:
        raise UserError(f"teacher {p} was trained on dataset version {theirs}, this dataset is {dataset_version}: "
                        "train a teacher on it (nas train --model teacher)")
    return model, info


def tutor_path_for(cfg: ExperimentConfig, arch: Architecture | None) -> int | None:
    """The tutor's high-resolution path (4 or 8) when the job uses the tutor chain, else None.

    `distill.tutor`: "tutor" always (needs KD losses), "none" never, "auto" when the architecture's
    ``distill.mode`` is "tutor" and KD losses are configured (its ``tutor_path`` wins over the config's).
    """
    mode = cfg.distill.tutor
    if cfg.train.model == "teacher" or arch is None:
        if mode == "tutor":
            raise UserError("the tutor chain distils into a student: use --model student (or --tutor none)")
        return None
    if mode == "none":
        return None
    if mode == "tutor":
        if not cfg.distill.losses:
            raise UserError("the tutor chain needs KD losses: pass --kd (e.g. --kd pixel) and --teacher")
        return int(cfg.distill.tutor_path)
    if arch.distill.get("mode") != "tutor":
        return None
    if not cfg.distill.losses:
        log.warning("the architecture asks for tutor-guided distillation but no KD losses are configured: "
                    "training the student without distillation")
        return None
    path = int(arch.distill.get("tutor_path", cfg.distill.tutor_path))
    if path not in (4, 8):
        raise UserError(f"field distill.tutor_path of the architecture: must be 4 or 8, got {path}")
    return path


def plan_phases(cfg: ExperimentConfig, tutor_path: int | None) -> tuple[Phase, ...]:
    """The job's phases in order (see :class:`Phase`)."""
    epochs = cfg.train.epochs
    kd = "file" if cfg.distill.losses else None
    if cfg.train.model in ("teacher", "baseline"):
        return (Phase(cfg.train.model, epochs, kd),)
    if tutor_path is None:
        return (Phase("student", epochs, kd),)
    tutor_epochs = cfg.distill.tutor_epochs or epochs
    return (Phase("tutor", tutor_epochs, "file"), Phase("student", epochs, "tutor"))


def check_online(cfg: ExperimentConfig) -> None:
    """Refuse bad online-distillation settings with a one-line UserError before anything is written."""
    dc = cfg.distill
    if dc.online == "none":
        return
    if cfg.train.model != "student":
        raise UserError("okddip distils within a student's peer group: use --model student")
    if dc.okddip_peers < 2:
        raise UserError(f"distill.okddip_peers must be at least 2, got {dc.okddip_peers}")
    if not 0.0 <= dc.okddip_share <= 1.0:
        raise UserError(f"distill.okddip_share must be in [0, 1], got {dc.okddip_share}")
    if not dc.okddip_temperature > 0:
        raise UserError(f"distill.okddip_temperature must be positive, got {dc.okddip_temperature}")
    if not 0 <= dc.okddip_weight < float("inf"):
        raise UserError(f"distill.okddip_weight must be a finite number >= 0, got {dc.okddip_weight}")
    if dc.okddip_rampup_epochs is not None and not dc.okddip_rampup_epochs >= 0:
        raise UserError(f"distill.okddip_rampup_epochs cannot be negative, got {dc.okddip_rampup_epochs}")


def online_peers(dc: DistillConfig, leader: SegNet, epochs: int,
                 ignore_index: int = 255) -> tuple[PeerGroup, OKDDipCriterion]:
    """The student `leader` wrapped in its OKDDip peer group, and the peers' criterion, for a phase of `epochs`
    epochs (E_r defaults to the paper's 80/300 of them)."""
    rampup = dc.okddip_rampup_epochs if dc.okddip_rampup_epochs is not None else OKDDIP_RAMPUP_SHARE * epochs
    group = PeerGroup(leader, peers=dc.okddip_peers, share=dc.okddip_share)
    criterion = OKDDipCriterion(dc.okddip_temperature, dc.okddip_weight, rampup, ignore_index)
    return group, criterion

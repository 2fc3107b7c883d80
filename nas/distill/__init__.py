"""Knowledge distillation: connectors, registered losses, weight schedules, the composed criterion, frozen teachers."""

from __future__ import annotations

from nas.distill.compose import DistillationCriterion, FrozenTeacher, KDTerm, freeze_teacher
from nas.distill.connectors import CONNECTOR_MODES, Connector
from nas.distill.losses import (
    KD_LOSSES,
    ChannelWiseDivergence,
    FeatureMimic,
    HolisticAdversarial,
    KDLoss,
    PairwiseAffinity,
    PixelKL,
    ScoreDiscriminator,
    create_kd_loss,
    list_kd_losses,
    register_kd_loss,
)
from nas.distill.schedule import LossSchedule

__all__ = [
    "KD_LOSSES",
    "CONNECTOR_MODES",
    "KDLoss",
    "register_kd_loss",
    "create_kd_loss",
    "list_kd_losses",
    "PixelKL",
    "PairwiseAffinity",
    "ChannelWiseDivergence",
    "FeatureMimic",
    "ScoreDiscriminator",
    "HolisticAdversarial",
    "Connector",
    "LossSchedule",
    "KDTerm",
    "DistillationCriterion",
    "FrozenTeacher",
    "freeze_teacher",
]

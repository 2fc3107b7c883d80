"""Knowledge distillation: connectors, registered losses, weight schedules, the composed criterion, frozen teachers,
and teacher-free online distillation among peers (OKDDip)."""

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
from nas.distill.okddip import (
    OKDDipCriterion,
    PeerAttention,
    PeerGroup,
    first_level_loss,
    leader_of,
    rampup_weight,
    second_level_loss,
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
    "PeerGroup",
    "PeerAttention",
    "OKDDipCriterion",
    "first_level_loss",
    "second_level_loss",
    "rampup_weight",
    "leader_of",
]

"""Connectors: align a student feature with a teacher feature in channels and resolution.

A connector sits between a recorded student output and the loss that compares it with a teacher output
(the *connector* stage of recorder → connector → loss, as in mmrazor). It is trained with the student and
dropped after training. Channels are matched by a 1×1 conv + BatchNorm (FitNets' regressor, Romero et al.,
ICLR 2015, with a 1×1 kernel), resolution by bilinear resizing to the teacher's H×W.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from search_spaces.upsample import resize

__all__ = ["Connector", "CONNECTOR_MODES"]

CONNECTOR_MODES = ("conv1x1", "identity", "auto")


class Connector(nn.Module):
    """`[B, c_student, h, w]` → `[B, c_teacher, H, W]`.

    Modes:

    * ``conv1x1``: a 1×1 conv (no bias) + BatchNorm, always, even when the channel counts match;
    * ``identity``: no parameters; the channel counts must match;
    * ``auto``: ``identity`` when the channel counts match, else ``conv1x1``.

    ``forward(student_feat, target_size)`` applies the channel map, then resizes bilinearly
    (``align_corners=False``) to ``target_size = (H, W)`` when given and different.
    """

    def __init__(
        self, c_student: int, c_teacher: int, mode: Literal["conv1x1", "identity", "auto"] = "conv1x1"
    ):
        super().__init__()
        if mode not in CONNECTOR_MODES:
            raise ValueError(f"connector mode must be one of {list(CONNECTOR_MODES)} but got {mode!r}.")
        if c_student <= 0 or c_teacher <= 0:
            raise ValueError(f"connector channels must be positive but got {c_student} → {c_teacher}.")
        if mode == "auto":
            mode = "identity" if c_student == c_teacher else "conv1x1"
        if mode == "identity" and c_student != c_teacher:
            raise ValueError(
                f"an identity connector needs equal channels but got student {c_student}, teacher {c_teacher}; "
                "use mode 'conv1x1' or 'auto'."
            )
        self.c_student, self.c_teacher, self.mode = c_student, c_teacher, mode
        if mode == "conv1x1":
            self.proj: nn.Module = nn.Sequential(
                nn.Conv2d(c_student, c_teacher, kernel_size=1, bias=False), nn.BatchNorm2d(c_teacher)
            )
            nn.init.kaiming_normal_(self.proj[0].weight, mode="fan_out", nonlinearity="relu")
        else:
            self.proj = nn.Identity()

    def forward(self, student_feat: torch.Tensor, target_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Map `[B, c_student, h, w]` to `[B, c_teacher, *target_size]` (or `[B, c_teacher, h, w]`)."""
        if student_feat.dim() != 4 or student_feat.shape[1] != self.c_student:
            raise ValueError(
                f"connector expects [B, {self.c_student}, H, W] but got {list(student_feat.shape)}."
            )
        out = self.proj(student_feat)
        if target_size is not None:
            out = resize(out, list(target_size))
        return out

    def extra_repr(self) -> str:
        return f"{self.c_student} → {self.c_teacher}, mode={self.mode}"

"""When and how strongly a distillation term counts: a weight with a linear warm-up and an active epoch window."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LossSchedule"]


@dataclass(frozen=True)
class LossSchedule:
    """The weight of one loss term over training.

    The term is active for ``start_epoch <= epoch < stop_epoch`` (no upper bound when ``stop_epoch`` is None) and
    off (factor 0) outside that window. Inside it, with elapsed time ``t = epoch + progress_in_epoch - start_epoch``
    in epochs, the factor rises linearly from 0 to ``weight`` over the first ``warmup_epochs`` and then stays at
    ``weight``: ``factor = weight * min(1, t / warmup_epochs)`` (``weight`` at once when ``warmup_epochs == 0``).
    """

    weight: float
    warmup_epochs: float = 0.0
    start_epoch: int = 0
    stop_epoch: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"loss weight must be a finite number >= 0 but got {self.weight}.")
        if not math.isfinite(self.warmup_epochs) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs cannot be negative but got {self.warmup_epochs}.")
        if self.start_epoch < 0:
            raise ValueError(f"start_epoch cannot be negative but got {self.start_epoch}.")
        if self.stop_epoch is not None and self.stop_epoch <= self.start_epoch:
            raise ValueError(
                f"stop_epoch must be greater than start_epoch ({self.start_epoch}) but got {self.stop_epoch}."
            )

    def factor(self, epoch: int, progress_in_epoch: float = 0.0) -> float:
        """The weight at `epoch` (0-based) after a fraction `progress_in_epoch` in [0, 1] of that epoch."""
        if not 0.0 <= progress_in_epoch <= 1.0:
            raise ValueError(f"progress_in_epoch must be in [0, 1] but got {progress_in_epoch}.")
        if epoch < self.start_epoch or (self.stop_epoch is not None and epoch >= self.stop_epoch):
            return 0.0
        if self.warmup_epochs == 0:
            return float(self.weight)
        elapsed = epoch + progress_in_epoch - self.start_epoch
        return float(self.weight) * min(1.0, elapsed / self.warmup_epochs)

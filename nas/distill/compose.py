"""Compose distillation: recorded outputs → connectors → registered losses × scheduled weights → one scalar.

Models return dicts of named outputs (``{"logits": [B, K, H, W], "aux16": ..., "feat8": [B, C, H/8, W/8]}``).
A :class:`KDTerm` names a loss, the student and teacher outputs it reads, its weight and schedule. A
:class:`DistillationCriterion` holds the losses and the connectors and returns the weighted sum plus each term's
value for logging.

Connectors carry parameters that the student's optimiser must own, so build them explicitly before creating
that optimiser::

    criterion = DistillationCriterion(terms).build(student_shapes, teacher_shapes).to(device)
    optimizer = SGD([*student.parameters(), *criterion.student_parameters()], ...)

where the shapes are ``{key: tensor.shape}`` of one forward pass of each model (tensors work too). A criterion
used without `build` creates its connectors on the first call and logs a warning: those parameters are then
missing from any optimiser created earlier. Use `student_parameters()`, never `parameters()`, for the student's
optimiser: `parameters()` also holds the discriminators of adversarial terms, which have their own optimisers.

The teacher is wrapped by :func:`freeze_teacher`: eval-mode BatchNorm, no gradient, and a parent's `.train()`
cannot switch it back to training mode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from nas.distill.connectors import CONNECTOR_MODES, Connector
from nas.distill.losses import KD_LOSSES, HolisticAdversarial, create_kd_loss
from nas.distill.schedule import LossSchedule

__all__ = ["KDTerm", "DistillationCriterion", "FrozenTeacher", "freeze_teacher"]

logger = logging.getLogger(__name__)

ShapeLike = Sequence[int] | torch.Size | torch.Tensor


@dataclass(frozen=True)
class KDTerm:
    """One distillation term: ``factor(epoch) · loss(connector(student[student_key]), teacher[teacher_key])``.

    `connector` is None for the loss's own need (a feature-mimicking loss gets an ``auto`` connector, the others
    none); a mode from ``("conv1x1", "identity", "auto")`` forces a connector, "none" forbids one.
    `name` labels the term in logs and module names; by default ``{loss}_{student_key}`` (plus
    ``_{teacher_key}`` when the keys differ).
    """

    loss: str  # a registered KD loss name: pixel | pairwise | cwd | holistic | feature | ...
    student_key: str = "logits"  # which student output the term reads
    teacher_key: str = "logits"  # which teacher output the term reads
    weight: float = 1.0
    warmup_epochs: float = 0.0  # linear ramp 0 → weight after start_epoch
    start_epoch: int = 0
    stop_epoch: int | None = None  # off from this epoch on (None: never)
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)  # passed to the loss constructor
    connector: Literal["conv1x1", "identity", "auto", "none"] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.loss not in KD_LOSSES:
            raise ValueError(f"unknown KD loss '{self.loss}' (known: {', '.join(KD_LOSSES)}).")
        if self.connector is not None and self.connector not in (*CONNECTOR_MODES, "none"):
            raise ValueError(
                f"KD term connector must be one of {[*CONNECTOR_MODES, 'none']} or None but got {self.connector!r}."
            )
        if not self.label or "." in self.label:
            raise ValueError(f"KD term name must be non-empty and contain no '.' but got {self.label!r}.")
        self.schedule  # noqa: B018  (validates weight and epochs)

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        keys = (
            self.student_key
            if self.student_key == self.teacher_key
            else f"{self.student_key}_{self.teacher_key}"
        )
        return f"{self.loss}_{keys}"

    @property
    def schedule(self) -> LossSchedule:
        return LossSchedule(self.weight, self.warmup_epochs, self.start_epoch, self.stop_epoch)

    @property
    def connector_mode(self) -> str | None:
        """The connector mode this term uses, or None when it uses none."""
        if self.connector == "none":
            return None
        if self.connector is not None:
            return self.connector
        return "auto" if KD_LOSSES[self.loss].needs_connector else None


def _channels(shape: ShapeLike, what: str) -> int:
    dims = tuple(shape.shape if isinstance(shape, torch.Tensor) else shape)
    if len(dims) not in (3, 4):
        raise ValueError(f"{what}: expected a [B, C, H, W] or [C, H, W] shape but got {list(dims)}.")
    return int(dims[-3])


def _get(outputs: Mapping[str, Any], key: str, side: str, label: str) -> Any:
    if key not in outputs:
        raise ValueError(
            f"KD term '{label}' reads {side} output '{key}', but the {side} provides {sorted(outputs)}."
        )
    return outputs[key]


class DistillationCriterion(nn.Module):
    """Weighted sum of distillation terms over named model outputs.

    ``forward(student_out, teacher_out, *, epoch=0, progress=0.0, mask=None, image=None)`` returns
    ``(total, values)``: `total` = Σ_terms factor(epoch, progress) · loss (a scalar tensor), `values` maps each
    term's label to its unweighted value (detached; 0 for a term outside its schedule, which is not computed).
    `mask` (bool `[B, H, W]` or a label map with 255 = ignore) goes to losses that read one, `image`
    `[B, 3, H, W]` to adversarial terms. `connectors` maps term labels to ready-made modules that replace the
    automatic ones.
    """

    def __init__(self, terms: Sequence[KDTerm], connectors: Mapping[str, nn.Module] | None = None):
        super().__init__()
        self.terms = tuple(terms)
        labels = [t.label for t in self.terms]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"KD term names must be unique; give `name` to the terms labelled {dupes}.")
        self.losses = nn.ModuleDict({t.label: create_kd_loss(t.loss, **t.kwargs) for t in self.terms})
        unknown = sorted(set(connectors or {}) - set(labels))
        if unknown:
            raise ValueError(f"connectors given for unknown KD terms {unknown} (terms: {labels}).")
        self.connectors = nn.ModuleDict(dict(connectors or {}))

    def _missing_connectors(self) -> list[KDTerm]:
        return [t for t in self.terms if t.connector_mode is not None and t.label not in self.connectors]

    @property
    def built(self) -> bool:
        """True when every term that needs a connector has one."""
        return not self._missing_connectors()

    def build(
        self, student_shapes: Mapping[str, ShapeLike], teacher_shapes: Mapping[str, ShapeLike]
    ) -> DistillationCriterion:
        """Create the missing connectors from the recorded shapes (`{key: [B, C, H, W]}`, tensors accepted).

        Call before `.to(device)` and before building the student's optimiser. Returns `self`.
        """
        for term in self._missing_connectors():
            c_s = _channels(_get(student_shapes, term.student_key, "student", term.label), term.label)
            c_t = _channels(_get(teacher_shapes, term.teacher_key, "teacher", term.label), term.label)
            self.connectors[term.label] = Connector(c_s, c_t, mode=term.connector_mode)  # type: ignore[arg-type]
        return self

    def student_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the student's optimiser should own: the connectors' (discriminators have their own)."""
        return self.connectors.parameters()

    def factors(self, epoch: int, progress: float = 0.0) -> dict[str, float]:
        """Each term's scheduled weight at `epoch` + `progress`."""
        return {t.label: t.schedule.factor(epoch, progress) for t in self.terms}

    def forward(
        self,
        student_out: Mapping[str, torch.Tensor],
        teacher_out: Mapping[str, torch.Tensor],
        *,
        epoch: int = 0,
        progress: float = 0.0,
        mask: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.built:
            first = next(iter(student_out.values()))
            logger.warning(
                "DistillationCriterion: connectors created on the first call; call build() before creating the "
                "optimiser so that it trains them."
            )
            self.build(student_out, teacher_out)
            self.connectors.to(device=first.device)
        total: torch.Tensor | None = None
        values: dict[str, torch.Tensor] = {}
        for term in self.terms:
            factor = term.schedule.factor(epoch, progress)
            if factor == 0.0:
                values[term.label] = torch.zeros(())
                continue
            value = self._term_value(term, student_out, teacher_out, mask, image)
            values[term.label] = value.detach()
            total = factor * value if total is None else total + factor * value
        if total is None:
            first = next(iter(student_out.values()))
            total = torch.zeros((), device=first.device)
        return total, values

    def _term_value(
        self,
        term: KDTerm,
        student_out: Mapping[str, torch.Tensor],
        teacher_out: Mapping[str, torch.Tensor],
        mask: torch.Tensor | None,
        image: torch.Tensor | None,
    ) -> torch.Tensor:
        loss = self.losses[term.label]
        args: list[Any] = []
        for name in loss.reads:
            if name == "student":
                s = _get(student_out, term.student_key, "student", term.label)
                if term.label in self.connectors:
                    t = _get(teacher_out, term.teacher_key, "teacher", term.label)
                    s = self.connectors[term.label](s, target_size=tuple(t.shape[-2:]))
                args.append(s)
            elif name == "teacher":
                args.append(_get(teacher_out, term.teacher_key, "teacher", term.label))
            elif name == "mask":
                args.append(mask)
            elif name == "image":
                if image is None:
                    raise ValueError(
                        f"KD term '{term.label}' ({term.loss}) needs the input image: pass image=."
                    )
                args.append(image)
            else:
                raise ValueError(f"KD loss '{term.loss}' reads an unknown input {name!r}.")
        return loss(*args)

    def discriminator_step(
        self,
        image: torch.Tensor,
        student_out: Mapping[str, torch.Tensor],
        teacher_out: Mapping[str, torch.Tensor],
        *,
        epoch: int = 0,
        progress: float = 0.0,
    ) -> dict[str, float]:
        """Update the critic of every active adversarial term; returns `{"{label}/{stat}": value}`."""
        logs: dict[str, float] = {}
        for term in self.terms:
            loss = self.losses[term.label]
            if not isinstance(loss, HolisticAdversarial) or term.schedule.factor(epoch, progress) == 0.0:
                continue
            stats = loss.discriminator_step(
                image,
                _get(student_out, term.student_key, "student", term.label),
                _get(teacher_out, term.teacher_key, "teacher", term.label),
            )
            logs.update({f"{term.label}/{k}": v for k, v in stats.items()})
        return logs


class FrozenTeacher(nn.Module):
    """A teacher that stays frozen: eval mode (BatchNorm uses running statistics), parameters without
    gradient, forward under ``torch.no_grad()``, and `train(True)` — also when a parent module calls it —
    leaves it in eval mode. The wrapped model is `.model` (its state-dict keys gain a ``model.`` prefix: load
    the teacher's weights before wrapping or through `.model`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        self.training = False
        self.model.eval()
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.model(*args, **kwargs)


def freeze_teacher(model: nn.Module) -> FrozenTeacher:
    """`model` wrapped as a :class:`FrozenTeacher` (returned as is when it already is one)."""
    return model if isinstance(model, FrozenTeacher) else FrozenTeacher(model)

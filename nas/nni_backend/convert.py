"""From NNI's choices to ours: architecture probabilities in :class:`~nas.latency.ArchProbs` layout (for the
differentiable latency term) and the exported sample as an architecture JSON (for train, export and studies).

No nni import here: the functions read the labels :mod:`nas.nni_backend.space` writes and plain tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from search_spaces.arch import Architecture, SpaceSpec
from search_spaces.derive import derive_from_probs, derive_within_budget
from search_spaces.upsample import UPSAMPLERS

__all__ = ["LabelLayout", "probs_from_logits", "one_hot_logits", "architecture_from_choice"]


class LabelLayout:
    """The labels of a space and the :class:`~nas.latency.ArchProbs` key each stands for."""

    def __init__(self, spec: SpaceSpec, main_branches: tuple[int, int], upsample: str):
        self.spec, self.main_branches, self.upsample = spec, tuple(main_branches), upsample
        L, S = spec.layers, len(spec.scales)
        self.alpha = {(layer, si): f"op_{layer}_{si}" for layer in range(L) for si in range(min(layer, S - 1) + 1)}
        self.beta = {(layer, si): f"path_{layer}_{si}" for layer in range(L) for si in range(1, min(layer, S - 1) + 1)
                     if layer > si}
        self.gamma = {(layer, si): f"width_{layer}_{si}" for layer in range(1, L) for si in range(min(layer, S - 1) + 1)}
        self.up: dict[tuple[int, int], str] = {}
        if upsample == "search":
            for e in self.main_branches:
                for k in range(spec.scales.index(e)):
                    self.up[(e, k)] = f"up_{e}_{k}"

    def names(self, label: str) -> list[str]:
        """Candidate names of `label`, in the order of the probability vectors."""
        kind = label.split("_", 1)[0]
        if kind == "op":
            return list(self.spec.ops)
        if kind == "path":
            return ["keep", "down"]
        if kind == "width":
            return [f"w{i}" for i in range(len(self.spec.widths))]
        return list(UPSAMPLERS)

    def labels(self) -> list[str]:
        """Every label of the space."""
        out = [*self.alpha.values(), *self.beta.values(), *self.gamma.values(), *self.up.values()]
        return out + (["up_final"] if self.upsample == "search" else [])


def probs_from_logits(layout: LabelLayout, logits: Mapping[str, torch.Tensor],
                      normalise: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
    """`{label: logits [n]}` → probabilities in :meth:`Supernet.arch_probs` layout (softmax unless `normalise`);
    gradients flow back to the logits, so the latency term of :mod:`nas.latency.expected` can be differentiated."""
    norm = normalise or (lambda t: F.softmax(t, -1))
    ref = next(iter(logits.values()))

    def fixed(name: str) -> torch.Tensor:
        return F.one_hot(torch.tensor(UPSAMPLERS.index(name)), len(UPSAMPLERS)).to(ref)

    probs: dict[str, Any] = {kind: {key: norm(logits[lab]) for key, lab in getattr(layout, kind).items()}
                             for kind in ("alpha", "beta", "gamma")}
    fix = layout.upsample if layout.upsample != "search" else None
    probs["upsample"] = {}
    for e in layout.main_branches:
        for k in range(layout.spec.scales.index(e)):
            probs["upsample"][(e, k)] = fixed(fix) if fix else norm(logits[layout.up[(e, k)]])
    probs["final_upsample"] = fixed(fix) if fix else norm(logits["up_final"])
    return probs


def one_hot_logits(layout: LabelLayout, sample: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A sample `{label: chosen name}` as one-hot vectors (probabilities 1 / 0) in the layout's order."""
    out = {}
    for label in layout.labels():
        names = layout.names(label)
        out[label] = F.one_hot(torch.tensor(names.index(sample[label])), len(names)).double()
    return out


def architecture_from_choice(layout: LabelLayout, sample: Mapping[str, Any], stem_width: float, head_width: float,
                             probs: Mapping[str, torch.Tensor] | None = None, min_depth_rule: bool = True,
                             meta: dict[str, Any] | None = None, cost: Callable[[Architecture], float] | None = None,
                             budget_ms: float | None = None, fill: float = 0.0) -> Architecture:
    """NNI's exported `sample` (label → chosen name) as our architecture, derived by our rules.

    Paths follow the sample exactly (one-hot β); operators, widths and upsamplers are the sample's. `probs`
    (label → probabilities, e.g. NNI's softmax of its α) only ranks the skips that the depth rules keep, so
    the choices must be their argmax; without it every choice counts as certain. With `cost` and `budget_ms`
    the result is kept within the budget (grown toward it below `fill` × budget) as the native search keeps its
    own (:func:`derive_within_budget`).
    """
    missing = [lab for lab in layout.labels() if lab not in sample]
    if missing:
        raise ValueError(f"NNI's sample lacks the choice {missing[0]!r}")
    hard = one_hot_logits(layout, sample)
    soft: dict[str, torch.Tensor] = {}
    for label, onehot in hard.items():
        p = probs.get(label) if probs is not None and not label.startswith("path_") else None
        if p is not None:
            p = p.detach().double()
            if int(p.argmax()) != int(onehot.argmax()):
                raise ValueError(f"label {label!r}: the sample's choice is not the most probable one")
        soft[label] = onehot if p is None else p
    arch_probs = probs_from_logits(layout, soft, normalise=lambda t: t)
    branches = f"{layout.main_branches[0]},{layout.main_branches[1]}"
    kwargs = {"branches": branches, "min_depth_rule": min_depth_rule, "stem_width": stem_width,
              "head_width": head_width, "kind": "student"}
    if cost is not None and budget_ms is not None:
        arch = derive_within_budget(layout.spec, arch_probs, cost, budget_ms, fill=fill, **kwargs)
    else:
        arch = derive_from_probs(layout.spec, arch_probs, **kwargs)
    return arch.with_meta(**(meta or {}))

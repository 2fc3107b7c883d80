"""The hyperparameters a study trial samples, and the config overrides each sampled value stands for.

Built-in parameters (:data:`DEFAULT_SPACE`) cover the knobs that shape a search's outcome: the latency target and weight,
the distillation choice and weights, fixed or searched upsampling, the tutor's path, the architecture learning
rate and the Gumbel temperature schedule. A YAML file replaces any of them by name:

    latency_target_ms: {low: 4.0, high: 40.0, log: true}   # a float range
    kd: {choices: [none, pixel]}                           # a categorical
    upsample: bilinear                                     # a plain value fixes it (not searched)
    train_epochs: {key: train.epochs, low: 1, high: 4}     # `key:` adds a parameter for any config key

Every sampled value becomes `--set` overrides (:meth:`SearchSpace.overrides`), so a trial runs the ordinary
`run_search` / `run_train` with a config like any other; the whole space is checked against the config once,
before any trial runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import UserError

__all__ = ["Param", "SearchSpace", "DEFAULT_SPACE", "load_space", "kd_losses"]

KD_CHOICE_SEP = "+"  # "pixel+pairwise": the retraining KD losses of one choice


@dataclass(frozen=True)
class Param:
    """One hyperparameter: a float / int range, a categorical, or a fixed value, and the config keys it sets."""

    name: str
    kind: str  # float | int | categorical | fixed
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None  # kind == "fixed"
    key: str | None = None  # the config key it sets; None for the built-ins with their own mapping
    help: str = ""

    def suggest(self, trial: Any) -> Any:
        """Sample this parameter on an Optuna trial (a fixed one is returned as is, not recorded)."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        return self.value

    def probe_values(self) -> list[Any]:
        """Values that span the parameter: checked against the config before a study starts."""
        if self.kind in ("float", "int"):
            return [self.low, self.high]
        if self.kind == "categorical":
            return list(self.choices)
        return [self.value]

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.name} = {self.value!r}"
        if self.kind == "categorical":
            return f"{self.name} in {list(self.choices)}"
        return f"{self.name} in [{self.low:g}, {self.high:g}]{' (log)' if self.log else ''} ({self.kind})"


# Built-in parameters: name → (default definition, the config keys it sets). `kd` and `tutor` map onto several keys.
DEFAULT_SPACE: dict[str, Param] = {
    p.name: p
    for p in (
        Param("latency_target_ms", "float", 4.0, 40.0, log=True, key="search.latency_target_ms",
              help="the search's latency target T at latency.input_hw (ms)"),
        Param("latency_weight", "float", 0.1, 10.0, log=True, key="search.latency_weight",
              help="weight of the latency term in the architecture loss"),
        Param("kd", "categorical", choices=("none", "pixel", "pixel+pairwise"),
              help="retraining KD losses joined by '+', or none (also the distillation the search records)"),
        Param("kd_weight", "float", 0.5, 5.0, log=True, key="distill.pixel_weight",
              help="weight of the pixel-wise KL term when retraining"),
        Param("pairwise_weight", "float", 0.1, 1.0, log=True, key="distill.pairwise_weight",
              help="weight of the pair-wise affinity term when retraining"),
        Param("search_kd_weight", "float", 0.1, 3.0, log=True, key="search.kd_weight",
              help="weight of the co-searched teacher's KL term during the search"),
        Param("tutor", "categorical", choices=("none", "4", "8"),
              help="distil through a tutor with a 1/4 or 1/8 high-resolution path (only with KD)"),
        Param("upsample", "categorical", choices=("search", "bilinear", "pixel_shuffle"), key="space.upsample",
              help="upsamplers searched, or fixed to one kind"),
        Param("arch_lr", "float", 3e-4, 1e-2, log=True, key="search.arch_lr",
              help="Adam learning rate of the architecture parameters"),
        Param("tau_start", "float", 1.0, 10.0, log=True, key="search.tau_start",
              help="Gumbel temperature at the start of the search epochs"),
        Param("tau_end", "float", 0.3, 1.5, log=True, key="search.tau_end",
              help="Gumbel temperature at the end (geometric annealing)"),
    )
}

_ENTRY_KEYS = {"low", "high", "log", "step", "choices", "value", "key", "type"}


def kd_losses(choice: str) -> list[str]:
    """The retraining KD losses of a `kd` choice: "none" → [], "pixel+pairwise" → ["pixel", "pairwise"]."""
    choice = str(choice).strip()
    if choice.lower() in ("", "none"):
        return []
    return [name.strip() for name in choice.split(KD_CHOICE_SEP) if name.strip()]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: expected a finite number, got {value!r}")
    return value


def _parse_entry(name: str, raw: Any, where: str) -> Param:
    """One YAML entry → Param; a built-in's keys and type survive unless the entry names its own."""
    base = DEFAULT_SPACE.get(name)
    if not isinstance(raw, dict):
        if base is None:
            raise UserError(f"{where}: '{name}' is not a built-in parameter ({', '.join(DEFAULT_SPACE)}); "
                            f"give it a config key, e.g. {name}: {{key: search.epochs, value: {raw!r}}}")
        return Param(name, "fixed", value=raw, key=base.key, help=base.help)
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown field '{unknown[0]}' in parameter '{name}' "
                        f"(known: {', '.join(sorted(_ENTRY_KEYS))})")
    key = raw.get("key", base.key if base else None)
    if base is None and not key:
        raise UserError(f"{where}: '{name}' is not a built-in parameter ({', '.join(DEFAULT_SPACE)}); "
                        "add `key: section.field` to say which config key it sets")
    if key is not None and (not isinstance(key, str) or key.count(".") != 1):
        raise UserError(f"{where}: parameter '{name}' has key {key!r}; expected section.field, e.g. search.arch_lr")
    help_text = base.help if base else f"sets {key}"
    if "value" in raw:
        if len(set(raw) - {"value", "key"}):
            raise UserError(f"{where}: parameter '{name}' has a fixed value and a range or choices: keep one")
        return Param(name, "fixed", value=raw["value"], key=key, help=help_text)
    if "choices" in raw:
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: parameter '{name}': choices must be a non-empty list, got {choices!r}")
        if any(not isinstance(c, (str, int, float, bool)) for c in choices):
            raise UserError(f"{where}: parameter '{name}': choices must be plain values, got {choices!r}")
        if len(set(map(json.dumps, choices))) != len(choices):
            raise UserError(f"{where}: parameter '{name}' lists a choice twice: {choices}")
        if len(set(raw) - {"choices", "key"}):
            raise UserError(f"{where}: parameter '{name}' has choices and a range: keep one")
        return Param(name, "categorical", choices=tuple(choices), key=key, help=help_text)
    if "low" not in raw or "high" not in raw:
        raise UserError(f"{where}: parameter '{name}' needs low and high, choices, or value")
    low, high = _number(raw["low"], f"{where}: {name}.low"), _number(raw["high"], f"{where}: {name}.high")
    log = raw.get("log", base.log if base is not None and base.kind in ("float", "int") else False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: {name}.log must be true or false, got {log!r}")
    step = raw.get("step")
    if step is not None:
        step = _number(step, f"{where}: {name}.step")
        if step <= 0 or log:
            raise UserError(f"{where}: {name}.step must be positive and cannot be combined with log")
    kind = raw.get("type")
    if kind is None:
        if base is not None and base.kind in ("float", "int"):
            kind = base.kind
        else:
            kind = "int" if all(isinstance(v, int) for v in (low, high, step if step is not None else 1)) else "float"
    if kind not in ("float", "int"):
        raise UserError(f"{where}: {name}.type must be float or int, got {kind!r}")
    if low > high or (log and low <= 0):
        raise UserError(f"{where}: parameter '{name}' needs low <= high{' and low > 0 (log scale)' if log else ''}, "
                        f"got [{low}, {high}]")
    if kind == "int" and (int(low) != low or int(high) != high):
        raise UserError(f"{where}: integer parameter '{name}' needs integer bounds, got [{low}, {high}]")
    return Param(name, kind, float(low) if kind == "float" else int(low), float(high) if kind == "float" else int(high),
                 log=log, step=step, key=key, help=help_text)


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a study, in a fixed order (so every trial samples the same space)."""

    params: tuple[Param, ...] = field(default_factory=lambda: tuple(DEFAULT_SPACE.values()))
    source: str = "built-in defaults"

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample every parameter on `trial`; fixed ones included (they are not recorded as Optuna params)."""
        return {p.name: p.suggest(trial) for p in self.params}

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The `--set key=value` overrides that one set of values stands for (values JSON-quoted)."""
        out: list[str] = []
        kd = kd_losses(values.get("kd", "none"))
        tutor = str(values.get("tutor", "none")).strip().lower()
        for p in self.params:
            if p.key is not None:
                out.append(f"{p.key}={json.dumps(values[p.name])}")
        if "kd" in values:
            out.append(f"distill.losses={json.dumps(kd)}")
            if not kd:
                out.append("search.distill=none")
            elif tutor in ("", "none", "0"):
                out.append("search.distill=pixel")
        if "tutor" in values:
            if kd and tutor not in ("", "none", "0"):
                if tutor not in ("4", "8"):
                    raise UserError(f"parameter tutor: expected none, 4 or 8, got {values['tutor']!r}")
                out += ["search.distill=tutor", f"search.tutor_path={tutor}", "distill.tutor=auto"]
            else:
                out.append("distill.tutor=none")
        return out

    def check(self, base: Any) -> None:
        """Apply every probe value of every parameter to `base` (an ExperimentConfig): a bad key, type or
        choice is a one-line UserError before the study starts, not a failed trial later."""
        from nas.config import apply_overrides
        from nas.distill import KD_LOSSES

        for p in self.params:
            for v in p.probe_values():
                if p.name == "kd":
                    bad = [n for n in kd_losses(v) if n not in KD_LOSSES]
                    if bad:
                        raise UserError(f"{self.source}: kd choice {v!r} names an unknown KD loss '{bad[0]}' "
                                        f"(known: {', '.join(KD_LOSSES)}; join several with '{KD_CHOICE_SEP}')")
                values = {q.name: q.probe_values()[0] for q in self.params}
                values[p.name] = v
                try:
                    apply_overrides(base, self.overrides(values))
                except UserError as exc:
                    raise UserError(f"{self.source}: parameter '{p.name}' = {v!r}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The space as YAML-ready data (stored with the study, so every worker can see what it samples)."""
        out: dict[str, Any] = {}
        for p in self.params:
            entry: dict[str, Any]
            if p.kind == "fixed":
                entry = {"value": p.value}
            elif p.kind == "categorical":
                entry = {"choices": list(p.choices)}
            else:
                entry = {"low": p.low, "high": p.high, "log": p.log, "type": p.kind}
                if p.step is not None:
                    entry["step"] = p.step
            if p.key is not None and (p.name not in DEFAULT_SPACE or DEFAULT_SPACE[p.name].key != p.key):
                entry["key"] = p.key
            out[p.name] = entry
        return out


def load_space(path: str | Path | None = None) -> SearchSpace:
    """Built-in defaults ← the YAML file's entries (by name); a malformed file is a one-line UserError."""
    if path is None:
        return SearchSpace()
    from nas.config import read_yaml

    data = read_yaml(path)
    where = f"space file {path}"
    params = dict(DEFAULT_SPACE)
    for name, raw in data.items():
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            raise UserError(f"{where}: parameter names are identifiers, got {name!r}")
        params[name] = _parse_entry(name, raw, where)
    return SearchSpace(tuple(params.values()), source=where)

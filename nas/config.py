"""Stage configurations: frozen dataclasses with plain defaults, YAML files of differences, `--set` overrides.

A config file holds only what differs from the defaults below, nested by section (`data:`, `run:`, ...).
`--set section.key=value` overrides are parsed as YAML scalars and type-checked against the dataclass field;
an unknown key or a wrong type is a :class:`~nas.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from nas.errors import ConfigError

__all__ = [
    "RunConfig",
    "DataConfig",
    "SpaceConfig",
    "ExperimentConfig",
    "load_config",
    "apply_overrides",
    "from_dict",
    "to_dict",
    "config_hash",
    "dump_yaml",
]

T = TypeVar("T")


@dataclass(frozen=True)
class RunConfig:
    """Where a job writes and what it runs on."""

    name: str = "run"  # run directory name under `root`
    root: str = "runs"  # parent folder of run directories
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    log_every: int = 10  # iterations between progress log lines


@dataclass(frozen=True)
class DataConfig:
    """Dataset choice and loader settings; `digit_scenes` is generated offline, `cityscapes` read from `root`."""

    name: Literal["digit_scenes", "cityscapes"] = "digit_scenes"
    root: str = "data/digit_scenes"  # cache folder (digit_scenes) or dataset root (cityscapes)
    image_size: tuple[int, int] = (128, 256)  # H, W of generated images / training crops
    num_train: int = 800  # digit_scenes: images in the train split
    num_val: int = 200  # digit_scenes: images in the val split
    seed: int = 0  # digit_scenes: generation seed (independent of run.seed)
    batch_size: int = 8
    workers: int = 0  # DataLoader worker processes
    scale_range: tuple[float, float] = (0.75, 1.5)  # cityscapes: random rescale before cropping
    flip: bool = True  # random horizontal flip for training


@dataclass(frozen=True)
class SpaceConfig:
    """The search space (a registered name) and what to change in it; None keeps the space's own value."""

    name: str = "fasterseg"  # a name from search_spaces.registry.list_spaces()
    layers: int | None = None
    fch: int | None = None
    ops: tuple[str, ...] | None = None
    widths: tuple[float, ...] | None = None
    mode: Literal["sampled", "mixed"] = "sampled"  # sampled: hard Gumbel one-hot, only chosen ops run
    shared_kernels: bool = False  # single-path style: candidate convs slice one shared kernel
    student_stem_width: float = 8 / 12  # FasterSeg's student stem/head width
    student_head_width: float = 8 / 12
    upsample: Literal["search", "bilinear", "pixel_shuffle"] = "search"  # searched or fixed upsamplers
    branches: Literal["auto", "32,16", "32,8"] = "auto"  # which two branches a derived network keeps


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole pipeline's configuration, one section per stage."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)


# --------------------------------------------------------------------------- conversion


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (tuples become lists, ready for YAML/JSON)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def config_hash(cfg: Any) -> str:
    """Short stable hash of a config (used to tag architecture files and checkpoints)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def dump_yaml(cfg: Any) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp` and convert lists to tuples; raise ConfigError naming `key`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(choices)}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key '{key}': {value!r} does not match {_type_name(tp)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"config key '{key}': expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a section (mapping), got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    raise ConfigError(f"config key '{key}': unsupported field type {_type_name(tp)}")  # pragma: no cover


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (partial) nested dict; missing keys keep their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}': {exc}") from None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...]) -> T:
    """Return `cfg` with `section.key=value` overrides applied and type-checked."""
    data = to_dict(cfg)
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config key '{'.'.join(path[: i + 1])}' in --set {item!r}")
            node = node[part]
        if path[-1] not in node:
            raise ConfigError(f"unknown config key '{'.'.join(path)}' in --set {item!r}")
        node[path[-1]] = value
    return from_dict(type(cfg), data)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a syntax error is a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {p} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    cls: type[T] = ExperimentConfig,  # type: ignore[assignment]
) -> T:
    """Defaults ← YAML file (differences only) ← `--set` overrides, validated at each step."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
    cfg = from_dict(cls, _merge(to_dict(cls()), data))
    return apply_overrides(cfg, list(overrides))

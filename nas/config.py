"""Stage configurations: frozen dataclasses with plain defaults, YAML files of differences, `--set` overrides.

A config file holds only what differs from the defaults below, nested by section (`data:`, `run:`, ...).
`--set section.key=value` overrides are parsed as YAML scalars and type-checked against the dataclass field;
an unknown key or a wrong type is a :class:`~nas.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from nas.errors import ConfigError, UserError

__all__ = [
    "RunConfig",
    "DataConfig",
    "FolderDataConfig",
    "SpaceConfig",
    "LatencyConfig",
    "SearchConfig",
    "DistillConfig",
    "TrainConfig",
    "ExportConfig",
    "StudyConfig",
    "ExperimentConfig",
    "load_config",
    "apply_overrides",
    "from_dict",
    "to_dict",
    "config_hash",
    "dump_yaml",
    "parse_hw",
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
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)


@dataclass(frozen=True)
class FolderDataConfig:
    """`data.name: folder`: the layout of your own image/mask tree under `data.root` (mmsegmentation-style).

    `{split}` in a folder or list-file name is replaced by the split's name. Masks hold class indices (L or P
    mode PNGs; the classes file's `ignore_index`, default 255, is ignore) or RGB colours from the classes file.
    """

    classes_file: str = "classes.yaml"  # class names [, colours, ignore index]; relative to data.root
    image_dir: str = "images/{split}"  # relative to data.root; searched recursively
    mask_dir: str = "masks/{split}"
    image_suffix: tuple[str, ...] = (".png", ".jpg", ".jpeg")  # an image is NAME + one of these
    mask_suffix: str = ".png"  # its mask is NAME + this, in mask_dir
    split_file: str | None = None  # e.g. ImageSets/Segmentation/{split}.txt: one NAME per line (relative to root)
    splits: tuple[str, ...] = ("train", "val")
    reduce_zero_label: bool = False  # index masks: label 0 is ignore, the others shift down by one (mmseg)


@dataclass(frozen=True)
class DataConfig:
    """Dataset choice and loader settings: `name` is a registered dataset (`nas.data.DATASETS`): `digit_scenes`
    is generated offline, `cityscapes` and `folder` (your own images and masks) are read from `root`."""

    name: str = "digit_scenes"  # digit_scenes | cityscapes | folder | any registered dataset
    root: str = "data/digit_scenes"  # cache folder (digit_scenes) or dataset root (cityscapes, folder)
    image_size: tuple[int, int] = (128, 256)  # H, W of generated images / training crops
    num_train: int = 800  # digit_scenes: images in the train split
    num_val: int = 200  # digit_scenes: images in the val split
    seed: int = 0  # digit_scenes: generation seed (independent of run.seed)
    batch_size: int = 8
    workers: int = 0  # DataLoader worker processes
    scale_range: tuple[float, float] = (0.75, 1.5)  # cityscapes, folder: random rescale before cropping
    flip: bool = True  # random horizontal flip for training
    folder: FolderDataConfig = field(default_factory=FolderDataConfig)  # the folder dataset's layout

    def __post_init__(self) -> None:
        from nas.data.registry import dataset_names  # the registry fills when nas.data is imported

        known = dataset_names()
        if self.name not in known:
            raise ConfigError(f"config key 'data.name': unknown dataset {self.name!r} (known: {', '.join(known)})")


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
    icnr: bool = True  # PixelShuffle upsamplers start from ICNR (false: PyTorch's default init of the 1×1 conv)
    branches: Literal["auto", "32,16", "32,8"] = "auto"  # which two branches a derived network keeps


@dataclass(frozen=True)
class LatencyConfig:
    """How latency is measured and priced; a table is only valid for the conditions it was measured under."""

    backend: Literal["torch", "onnxruntime"] = "torch"
    input_hw: tuple[int, int] = (256, 512)  # H, W the latency is measured and predicted at
    batch: int = 1
    threads: int = 2  # CPU threads while measuring (0 = torch's default)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    warmup: int = 5
    repeats: int = 15  # median of this many timed runs per unit
    rounds: int = 3  # interleaved rounds per unit (the median is kept)
    validate_rounds: int = 12  # interleaved rounds per whole network in validate / calibrate (the median is kept)
    normalise: bool = True  # CPU: time a reference convolution next to every measurement, cancel the speed drift
    cache_dir: str = "runs/latency_tables"  # tables cached here under a per-device key
    table: str | None = None  # an explicit table file instead of the cache
    force: bool = False  # use a table measured under other conditions
    calibrate: int = 12  # whole networks measured to fit the table's correction (0 = none)
    validate_n: int = 30  # random networks `nas latency validate` measures
    validate_seed: int = 1


@dataclass(frozen=True)
class SearchConfig:
    """Bi-level search (FasterSeg's defaults scaled to the dataset): weights on split A, architecture on split B."""

    warmup_epochs: int = 2  # weights only, architecture frozen, widths sandwich-sampled
    epochs: int = 6  # alternating architecture / weight epochs after the warm-up
    iters_per_epoch: int = 0  # 0 = one pass over split A
    split_ratio: float = 0.5  # share of the train split used for weights (A); the rest (B) for the architecture
    val_batches: int = 0  # val batches used to score the derived networks each epoch (0 = all)
    weight_optimizer: Literal["sgd", "adamw"] = "sgd"  # FasterSeg's SGD; AdamW for short searches
    weight_lr: float = 0.02  # on weights (FasterSeg's SGD: 0.01–0.02)
    weight_momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-4  # Adam on α, β, γ, upsamplers (FasterSeg: 3e-4, betas 0.5/0.999)
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 0.0
    tau_start: float = 5.0  # Gumbel temperature, annealed geometrically over the search epochs
    tau_end: float = 1.0
    aux_weight: float = 0.2  # weight of the auxiliary heads' cross-entropy
    class_weighted: bool = True  # weight the cross-entropy by inverse sqrt class frequency
    teacher: bool = True  # co-search a full-width teacher (no latency term) and distil it into the student
    kd_weight: float = 1.0  # pixel-wise KL from the teacher during search (0 = off)
    kd_temperature: float = 1.0
    distill: Literal["none", "pixel", "tutor"] = "pixel"  # the retraining distillation recorded in the architecture
    tutor_path: Literal[4, 8] = 8  # the tutor's added high-resolution stream (1/4 or 1/8)
    latency_target_ms: float = 0.0  # explicit target T at latency.input_hw; 0 = no latency term
    latency_loss: Literal["hinge", "mnas"] = "hinge"
    latency_weight: float = 1.0
    latency_exponent: float = 2.0  # β of the mnas form (Lat/T)^β
    latency_adapt: bool = True  # double / halve the weight after each epoch the derived network misses the target
    fit_target: bool = True  # re-derive a student above the target within it (derive_within_budget)
    fill_target: float = 0.0  # with fit_target: grow a student below fill_target × target toward it (0 = never)
    fine_grained: bool = False  # FasterSeg's decoupled α/β/γ latency weighting (0.002 / 0.994 / 0.004)
    # native: our supernet, differentiable (FasterSeg); evolution: our supernet trained one-shot (uniform single
    # paths, no architecture steps), then an evolutionary search scored on split B; nni-*: NNI's DARTS /
    # GumbelDARTS / RandomOneShot (the `nni` extra); halving: random architectures within the target, each
    # trained alone briefly, the best half trained on, until one is left (no supernet)
    strategy: Literal["native", "evolution", "halving", "nni-darts", "nni-gumbel", "nni-random"] = "native"
    nni_candidates: int = 8  # nni-random: sampled architectures scored (loss + latency term) on split B
    extra_targets_ms: tuple[float, ...] = ()  # evolution, halving: more targets, one student each
    evolution_population: int = 16  # candidates per generation
    evolution_generations: int = 8  # generations after the random first one
    evolution_mutation: float = 0.1  # per-row redraw probability of a mutation
    evolution_window: float = 0.95  # evolution and halving: candidates must price within [window × T, T]
    evolution_calib_batches: int = 8  # split-A batches that re-estimate BatchNorm statistics per candidate
    evolution_score_batches: int = 8  # split-B batches a candidate is scored on (0 = all of split B)
    halving_candidates: int = 8  # halving: random architectures drawn within [window × T, T] per target
    halving_iters: int = 100  # halving: training iterations of every candidate in the first rung
    halving_eta: int = 2  # halving: the best 1/η go on to η× as many iterations, until one is left
    halving_score_batches: int = 0  # halving: split-B batches a candidate is scored on (0 = all of split B)


@dataclass(frozen=True)
class DistillConfig:
    """Distillation for retraining: which losses (teacher → tutor → student), their weights and schedule."""

    losses: tuple[str, ...] = ()  # any of: pixel, logit_std, dist, pairwise, cwd, holistic, feature; () = no KD
    teacher: str | None = None  # a trained teacher's model file (model.pt of `nas train --model teacher`)
    tutor: Literal["auto", "none", "tutor"] = "auto"  # auto: as the architecture's distill.mode says
    tutor_path: Literal[4, 8] = 8  # the tutor's extra high-resolution stream (1/4 or 1/8)
    tutor_epochs: int = 0  # epochs to train the tutor from the teacher before it teaches (0 = train.epochs)
    tutor_blocks: int = 3  # 3×3 ConvBN-ReLU layers in the tutor's high-resolution stream
    temperature: float = 1.0  # pixel KL temperature
    pixel_weight: float = 1.0
    logit_std_weight: float = 1.0  # logit_std: pixel KL on per-pixel z-scored logits
    logit_std_temperature: float = 2.0
    dist_weight: float = 1.0  # dist: Pearson-correlation KD (inter-class β + intra-class γ)
    dist_beta: float = 1.0
    dist_gamma: float = 1.0
    dist_temperature: float = 1.0
    pairwise_weight: float = 0.5
    pairwise_pool: int = 2
    cwd_weight: float = 3.0
    cwd_temperature: float = 4.0
    holistic_weight: float = 0.1
    holistic_lr: float = 4e-4
    feature_weight: float = 1.0
    warmup_epochs: int = 0  # KD weights ramp linearly from 0 over these epochs
    online: Literal["none", "okddip"] = "none"  # teacher-free online KD of the student (--kd okddip)
    okddip_peers: int = 3  # auxiliary peers beside the leader (m − 1; the paper's m = 4)
    okddip_share: float = 0.5  # leading share of each branch's cells the peers share with the leader (+ the stem)
    okddip_temperature: float = 3.0  # T of both KL levels (the paper's value)
    okddip_weight: float = 1.0  # scales L1 + L2 (α in the authors' code)
    okddip_rampup_epochs: float | None = None  # E_r of w(e) = exp(−5(1 − e/E_r)²); None = 80/300 of train.epochs


@dataclass(frozen=True)
class TrainConfig:
    """Retraining a derived network (or training a teacher) from scratch: FasterSeg's recipe scaled down."""

    model: Literal["student", "teacher", "baseline"] = "student"  # baseline: a hand-designed real-time network
    teacher_arch: Literal["hrnet", "searched"] = "hrnet"  # what `--model teacher` trains
    hrnet_preset: str = "w18_small"
    baseline: str = "bisenetv2"  # `--model baseline`'s family: any of search_spaces.baselines.BASELINES
    baseline_width: float = 1.0  # its channel multiplier (channels rounded to multiples of 8), > 0
    baseline_depth: float = 1.0  # its multiplier of repeated blocks (rounded, at least 1), > 0
    epochs: int = 10
    iters_per_epoch: int = 0  # 0 = one pass over the train split
    optimizer: Literal["sgd", "adamw"] = "sgd"  # FasterSeg's SGD; AdamW learns much faster in short recipes
    lr: float = 0.01  # peak learning rate, poly decay (power 0.9); AdamW wants about 2e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    grad_clip: float = 5.0  # 0 = off
    ohem_thresh: float = 0.7  # OHEM cross-entropy on the main head (1.0 = plain CE)
    ohem_min_kept: int = 10_000
    aux_weight: float = 0.2  # CE weight of each auxiliary head
    class_weighted: bool = True
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    eval_every: int = 1  # epochs between val evaluations (the last epoch is always evaluated)


@dataclass(frozen=True)
class ExportConfig:
    """Export: formats, the numeric check against eager, and the latency measured for each backend."""

    formats: tuple[str, ...] = ("torchscript", "onnx", "json")
    input_hw: tuple[int, int] = (0, 0)  # export / benchmark size; (0, 0) = the model file's (a student: latency.input_hw)
    atol: float = 1e-4  # max |exported − eager| allowed on the logits is atol + rtol · max |eager logits|
    rtol: float = 1e-5
    opset: int = 17
    dynamic: bool = False  # ONNX with dynamic height/width (checked against eager at a second size)
    measure_latency: bool = True
    threads: int = 2  # CPU threads of every backend while timing (0 = the libraries' default)
    warmup: int = 5  # untimed runs per backend before timing
    repeats: int = 15  # median of this many timed runs per backend
    real_images: int = 4  # val images of the configured dataset the export is also checked on (0 = random only)


@dataclass(frozen=True)
class StudyConfig:
    """An Optuna study over the search's hyperparameters (`nas study`): trial folders, sampler, latency budget."""

    root: str = "runs/studies"  # <root>/<study>/trial_<n>/ holds each trial's runs; default storage <root>/studies.db
    sampler: Literal["nsga2", "tpe"] = "nsga2"
    population: int = 8  # NSGA-II population size (Optuna's 50 suits long studies only)
    latency_budget_ms: float = 0.0  # a trial measured slower than this is infeasible (0 = no constraint)
    teacher: str | None = None  # teacher model file for KD trials; None = train one per study (train.hrnet_preset)
    teacher_epochs: int = 0  # epochs of that per-study teacher (0 = train.epochs)
    artifacts: str | None = None  # artifact folder; None = beside the storage file (<root>/artifacts for a server)
    heartbeat_s: int = 60  # database storages: a running trial's heartbeat interval
    grace_s: int = 180  # a trial silent this long is failed and retried (same parameters, seed and folder)
    retries: int = 2  # times one crashed trial is retried


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole pipeline's configuration, one section per stage."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    study: StudyConfig = field(default_factory=StudyConfig)


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
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"config key '{key}': {value} is too large for a number") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a section (mapping), got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    raise ConfigError(f"config key '{key}': unsupported field type {_type_name(tp)}")  # pragma: no cover


def _shown(key: str) -> str:
    """A user-supplied key as an error message shows it: control characters escaped, so the message stays one line."""
    return key if key.isprintable() else repr(key)[1:-1]


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (partial) nested dict; missing keys keep their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)  # keys of a YAML file need not be strings
    if unknown:
        raise ConfigError(f"unknown config key '{_shown(f'{prefix}{unknown[0]}')}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}': {exc}") from None


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags that build objects), reading `1e-3` as a float as YAML 1.2 does; YAML 1.1,
    which PyYAML follows, wants a dot (`1.0e-3`) and would read `--set train.lr=1e-3` as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _load_yaml(text: str) -> Any:
    """Parse YAML text with the safe loader above."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: builds plain data only


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
        value = _load_yaml(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # e.g. an impossible date: read it as text
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
                raise ConfigError(f"unknown config key '{_shown('.'.join(path[: i + 1]))}' in --set {item!r}")
            node = node[part]
        if path[-1] not in node:
            raise ConfigError(f"unknown config key '{_shown('.'.join(path))}' in --set {item!r}")
        node[path[-1]] = value
    return from_dict(type(cfg), data)


def parse_hw(text: str) -> tuple[int, int]:
    """An input size given on the command line (`--input`): '1024x2048' → (1024, 2048); anything else is a
    UserError."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise UserError(f"--input: expected HxW with positive integers, e.g. 1024x2048, got {text!r}")
    return int(parts[0]), int(parts[1])


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a syntax error is a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = _load_yaml(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {p} is not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text") from None
    except RecursionError:
        raise ConfigError(f"config file {p} is nested too deeply to be read") from None
    except ValueError as exc:  # a scalar YAML cannot build, e.g. the date 2020-13-45
        raise ConfigError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0][:120]}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
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

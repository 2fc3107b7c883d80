"""Datasets and loaders: the generated digit scenes (default), Cityscapes and your own images and masks
(`folder`), each registered in :data:`DATASETS` (see :mod:`nas.data.registry`), behind one small API.

Every dataset item is a dict: "image" `float32 [3, H, W]` (ImageNet-normalised), "label" `int64 [H, W]`
(ignore = 255), "index" int, and for digit scenes "size" `uint8 [H, W]` (0 = background/ignore, b ≥ 1 =
pixel of an object in size bucket b, see :attr:`DatasetInfo.size_buckets`).

Loaders are reproducible: the sampler draws both the order and a per-item augmentation seed from one
seeded `torch.Generator`, so the same seed gives the same batches whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nas.config import DataConfig
from nas.data import cityscapes as _cs  # noqa: F401  (registers "cityscapes")
from nas.data import digit_scenes as _ds  # noqa: F401  (registers "digit_scenes")
from nas.data import folder as _folder  # noqa: F401  (registers "folder")
from nas.data.registry import (
    DATASETS,
    IGNORE_INDEX,
    DataReport,
    DatasetInfo,
    DatasetSpec,
    register_dataset,
)
from nas.data.transforms import denormalize, normalize
from nas.errors import ConfigError, UnknownNameError, UserError

__all__ = [
    "IGNORE_INDEX",
    "DATASETS",
    "DataReport",
    "DatasetSpec",
    "register_dataset",
    "dataset_spec",
    "check_data_config",
    "check_dataset",
    "DatasetInfo",
    "KeyedSubset",
    "dataset_info",
    "dataset_version",
    "build_dataset",
    "build_loader",
    "class_frequencies",
    "class_weights",
    "colorize",
    "denormalize",
    "normalize",
]

STRIDE = 32  # the networks' coarsest scale: image sizes are multiples of it


def dataset_spec(cfg: DataConfig | str) -> DatasetSpec:
    """The registered entry of `cfg.name` (or of a name); an unknown one is a one-line ConfigError."""
    name = cfg if isinstance(cfg, str) else cfg.name
    try:
        return DATASETS[name]
    except UnknownNameError as exc:
        raise ConfigError(f"config key 'data.name': {exc}") from None


def check_data_config(cfg: DataConfig) -> None:
    """Everything about `cfg` that can be checked without generating or reading the dataset: a registered
    name, loader settings, image size, augmentation range, and the dataset's own options (for `folder`: the
    root, its classes file, split folders and list files). Raises a one-line UserError (ConfigError for a bad
    value); call it before any work."""
    spec = dataset_spec(cfg)
    if cfg.batch_size < 1:
        raise ConfigError(f"config key 'data.batch_size' must be positive, got {cfg.batch_size}")
    if cfg.workers < 0:
        raise ConfigError(f"config key 'data.workers' cannot be negative, got {cfg.workers}")
    h, w = cfg.image_size
    if h < STRIDE or w < STRIDE or h % STRIDE or w % STRIDE:
        raise ConfigError(f"config key 'data.image_size': {h}x{w} must be positive multiples of {STRIDE}, the "
                          "networks' coarsest stride")
    lo, hi = cfg.scale_range
    if not 0 < lo <= hi:
        raise ConfigError(f"config key 'data.scale_range': [{lo}, {hi}] must satisfy 0 < low <= high")
    spec.check_config(cfg)


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """Classes, palette, splits and size buckets of the configured dataset."""
    return dataset_spec(cfg).info(cfg)


def build_dataset(cfg: DataConfig, split: str, augment: bool | None = None) -> Dataset:
    """The `split` of the configured dataset; `augment` (default: train split only) turns on the random
    scale/crop/flip of datasets read from files. Digit scenes are generated (or loaded from the cache under
    `cfg.root`); a folder dataset's split is checked for missing pairs and size mismatches first."""
    spec = dataset_spec(cfg)
    info = spec.info(cfg)
    if split not in info.splits:
        raise UserError(f"{info.name} has splits {', '.join(info.splits)}, not {split!r}")
    augment = split == "train" if augment is None else augment
    return spec.build(cfg, split, augment)


def check_dataset(cfg: DataConfig, splits: list[str] | tuple[str, ...] | None = None) -> DataReport:
    """What `nas data check` reports: counts, image sizes and class pixels per split, and every problem."""
    spec = dataset_spec(cfg)
    if splits:
        info = spec.info(cfg)
        unknown = [s for s in splits if s not in info.splits]
        if unknown:
            raise UserError(f"{info.name} has splits {', '.join(info.splits)}, not {unknown[0]!r}")
    return spec.check(cfg, list(splits) if splits else None)


class _SeededSampler(Sampler):
    """Yields `(index, augment_seed)` keys; order (when shuffled) and seeds come from one seeded generator,
    which advances every epoch."""

    def __init__(self, n: int, shuffle: bool, seed: int):
        self.n, self.shuffle = n, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, 2**62, (self.n,), generator=self.generator)
        return iter(zip(order.tolist(), seeds.tolist()))


class KeyedSubset(Dataset):
    """A subset of a dataset that accepts the loader's `(index, augment_seed)` keys (torch's Subset does not)."""

    def __init__(self, dataset: Dataset, indices: list[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        if isinstance(key, tuple):
            return self.dataset[(self.indices[key[0]], key[1])]
        return self.dataset[self.indices[key]]


def build_loader(
    cfg: DataConfig,
    split: str,
    shuffle: bool | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    workers: int | None = None,
    drop_last: bool | None = None,
    augment: bool | None = None,
    dataset: Dataset | None = None,
) -> DataLoader:
    """A seeded DataLoader over `split`; shuffle and drop_last default to True for train only.

    `dataset` reuses an already-built dataset (e.g. to share the digit-scene arrays between loaders).
    """
    is_train = split == "train"
    shuffle = is_train if shuffle is None else shuffle
    drop_last = is_train if drop_last is None else drop_last
    batch_size = cfg.batch_size if batch_size is None else batch_size
    workers = cfg.workers if workers is None else workers
    if batch_size < 1:
        raise UserError(f"data.batch_size must be positive, got {batch_size}")
    ds = dataset if dataset is not None else build_dataset(cfg, split, augment)
    if drop_last and len(ds) < batch_size:
        raise UserError(f"{split} split has {len(ds)} images, fewer than one batch of {batch_size}")
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=_SeededSampler(len(ds), shuffle, seed),
        num_workers=workers,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0,
    )


def class_frequencies(dataset: Dataset) -> np.ndarray:
    """Fraction of labelled pixels per class `[K]` (ignore pixels left out)."""
    counts = np.asarray(dataset.label_counts(), dtype=np.float64)  # type: ignore[attr-defined]
    total = counts.sum()
    return counts / total if total > 0 else counts


def class_weights(dataset: Dataset, method: str = "inv_sqrt") -> torch.Tensor:
    """Per-class loss weights `float32 [K]` so the background does not swamp the loss.

    `inv_sqrt`: w_c ∝ 1/√f_c; `median`: median-frequency balancing w_c = median(f) / f_c (Eigen & Fergus,
    ICCV 2015, §4.1). Weights are scaled so the pixel-weighted mean Σ f_c w_c is 1 (the loss keeps its scale);
    a class with no pixels gets the largest weight.
    """
    freq = class_frequencies(dataset)
    present = freq > 0
    if not present.any():
        raise UserError("cannot compute class weights: the dataset has no labelled pixels")
    w = np.zeros_like(freq)
    if method == "inv_sqrt":
        w[present] = 1.0 / np.sqrt(freq[present])
    elif method == "median":
        w[present] = np.median(freq[present]) / freq[present]
    else:
        raise ValueError(f"class weight method must be 'inv_sqrt' or 'median' but got {method!r}.")
    w /= float((freq * w).sum())
    w[~present] = w[present].max()
    return torch.tensor(w, dtype=torch.float32)


def colorize(label_map: np.ndarray | torch.Tensor, palette: tuple[tuple[int, int, int], ...] | list) -> np.ndarray:
    """Class ids `[H, W]` → `uint8 [H, W, 3]`; ignore and ids outside the palette are black."""
    ids = label_map.detach().cpu().numpy() if isinstance(label_map, torch.Tensor) else np.asarray(label_map)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    safe = np.where((ids >= 0) & (ids < len(palette)), ids, 255).astype(np.intp)
    lut[255] = 0
    return lut[safe]


def dataset_version(cfg: DataConfig) -> str:
    """What a trained model must match beyond the class names (:meth:`DatasetSpec.version`): the digit scenes'
    generator version; empty for datasets read from disk."""
    return dataset_spec(cfg).version(cfg)

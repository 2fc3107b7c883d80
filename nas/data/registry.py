"""The dataset registry: every dataset `data.name` may name, and what each one knows how to do.

A registered entry (a :class:`DatasetSpec` subclass, registered with ``@register_dataset("name")``) gives

* :meth:`DatasetSpec.info` — classes, palette, splits and ignore index (:class:`DatasetInfo`) from a DataConfig,
  without reading images;
* :meth:`DatasetSpec.build` — one split as a torch Dataset (items are dicts, see :mod:`nas.data`);
* :meth:`DatasetSpec.check` — a :class:`DataReport` for ``nas data check``: counts, image sizes, class pixels
  per split and every problem found, one line each (nothing raised for a broken pair);
* :meth:`DatasetSpec.check_config` — the cheap checks of its options (folders, files) that
  :func:`nas.data.check_data_config` runs before any work.

Labels inside the pipeline always use 255 for "ignore"; a dataset whose files use another value maps it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from nas.errors import UserError
from nas.registry import Registry

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from nas.config import DataConfig

__all__ = [
    "IGNORE_INDEX",
    "DATASETS",
    "DatasetInfo",
    "DatasetSpec",
    "DataReport",
    "register_dataset",
    "dataset_names",
    "shown",
    "error_reason",
    "image_size_of",
    "check_pairs",
    "check_splits",
]

IGNORE_INDEX = 255


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the pipeline needs to know about a dataset, without opening any image."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per class, for previews and predictions
    splits: tuple[str, ...]
    size_buckets: tuple[str, ...] = ()  # names of the size-map values 1, 2, ...; empty when no size map
    ignore_index: int = IGNORE_INDEX


@dataclass
class DataReport:
    """What :meth:`DatasetSpec.check` found: per split the number of usable pairs, the distinct image sizes
    `(H, W)` with their counts, and pixels per class (`ignore` apart); and every problem, one line each."""

    info: DatasetInfo
    root: str
    counts: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, Counter] = field(default_factory=dict)
    class_pixels: dict[str, np.ndarray] = field(default_factory=dict)  # split → int64 [K]
    ignore_pixels: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def start(self, split: str) -> None:
        self.counts.setdefault(split, 0)
        self.sizes.setdefault(split, Counter())
        self.class_pixels.setdefault(split, np.zeros(self.info.num_classes, dtype=np.int64))
        self.ignore_pixels.setdefault(split, 0)

    def add_label(self, split: str, label: np.ndarray) -> None:
        """Count the pixels of one checked label map (values < K or 255)."""
        counts = np.bincount(np.asarray(label).ravel(), minlength=256)
        self.class_pixels[split] += counts[: self.info.num_classes]
        self.ignore_pixels[split] += int(counts[self.info.ignore_index])

    @property
    def ok(self) -> bool:
        return not self.problems


T = TypeVar("T", bound="DatasetSpec")


class DatasetSpec:
    """Base of a registered dataset; subclasses override :meth:`info`, :meth:`build` and :meth:`check`."""

    name: str = ""  # set by :func:`register_dataset`

    def info(self, cfg: DataConfig) -> DatasetInfo:
        raise NotImplementedError

    def build(self, cfg: DataConfig, split: str, augment: bool) -> Dataset:
        raise NotImplementedError

    def check(self, cfg: DataConfig, splits: Iterable[str] | None = None) -> DataReport:
        raise NotImplementedError

    def check_config(self, cfg: DataConfig) -> None:
        """Cheap checks of the dataset's own options (no image is read); raise a one-line UserError."""

    def version(self, cfg: DataConfig) -> str:
        """What a trained model must match beyond the class names (a generator version, say); "" = nothing."""
        return ""


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: ``@register_dataset("name")`` above a :class:`DatasetSpec` subclass registers one
    instance of it under `name` (a taken name raises ValueError)."""

    def deco(cls: type[T]) -> type[T]:
        spec = cls()
        spec.name = name
        DATASETS.add(name, spec)
        return cls

    return deco


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names (importing :mod:`nas.data` registers the built-in ones)."""
    import nas.data  # noqa: F401  (registers digit_scenes, cityscapes, folder)

    return DATASETS.names()


def shown(path: str | Path) -> str:
    """A path as one-line messages show it: control characters escaped."""
    s = str(path)
    return s if s.isprintable() else repr(s)[1:-1]


def image_size_of(path: Path, what: str = "image") -> tuple[int, int]:
    """(H, W) of an image file from its header; an unreadable file is a one-line UserError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UserError(f"cannot read {what} {shown(path)}: {error_reason(exc, path)}") from None


def error_reason(exc: BaseException, path: str | Path | None = None) -> str:
    """The first line of an exception's message without the file name (the caller's message names it)."""
    text = (str(exc).splitlines() or [""])[0]
    for name in {str(path) if path is not None else "", str(getattr(exc, "filename", "") or "")} - {""}:
        text = text.replace(repr(name), "").replace(name, "")
    return text.strip(" :") or type(exc).__name__


def check_pairs(
    report: DataReport,
    split: str,
    pairs: Iterable[tuple[Path, Path]],
    read_label: Callable[[Path], np.ndarray],
    decode_images: bool = False,
    progress: str = "",
) -> None:
    """Check `(image, label)` pairs into `report`: both readable, same size, label decodable by `read_label`
    (which returns ids < K or 255 and raises a one-line UserError naming the file otherwise). Problems are
    collected, not raised."""
    from PIL import Image
    from tqdm import tqdm

    pairs = list(pairs)
    report.start(split)
    bar = tqdm(pairs, desc=progress or f"checking {split}", unit="img", leave=False,
               disable=len(pairs) < 50 or None)
    for img, lab in bar:
        try:
            size = image_size_of(img, "image")
            lab_size = image_size_of(lab, "mask")
            if size != lab_size:
                raise UserError(f"mask {shown(lab)} is {lab_size[0]}x{lab_size[1]} but its image {shown(img)} is "
                                f"{size[0]}x{size[1]}")
            if decode_images:
                try:
                    with Image.open(img) as im:
                        im.load()
                except (OSError, ValueError) as exc:
                    raise UserError(f"cannot read image {shown(img)}: {error_reason(exc, img)}") from None
            label = read_label(lab)
            report.add_label(split, label)
        except UserError as exc:
            report.problems.append(f"{split}: {exc}")
            continue
        report.counts[split] += 1
        report.sizes[split][size] += 1


def check_splits(
    report: DataReport,
    splits: Iterable[str],
    scan: Callable[[str], tuple[list[tuple[Path, Path]], list[str]]],
    read_label: Callable[[Path], np.ndarray],
    decode_images: bool = False,
) -> DataReport:
    """Check each split of a dataset read from files into `report`: `scan(split)` pairs its images and labels
    and lists the problems found doing so (a UserError there marks the whole split broken), then
    :func:`check_pairs` checks the pairs. Returns `report`."""
    for split in splits:
        report.start(split)
        try:
            pairs, problems = scan(split)
        except UserError as exc:
            report.problems.append(f"{split}: {exc}")
            continue
        report.problems.extend(f"{split}: {p}" for p in problems)
        check_pairs(report, split, pairs, read_label, decode_images=decode_images)
    return report

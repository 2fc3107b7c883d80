"""Cityscapes: images `leftImg8bit/{split}/{city}/{name}_leftImg8bit.png`, labels
`gtFine/{split}/{city}/{name}_gtFine_labelIds.png`, label ids mapped to the 19 train ids (ignore = 255).

The id → train id table is the official one (cityscapesscripts' `helpers/labels.py`), carried here so the
package needs no extra dependency. Problems with the tree (missing root, split, label; an id outside the
table; an image and label of different sizes) are one-line :class:`~nas.errors.UserError` naming the path.

Resolution: `DataConfig.image_size` is the resolution the network sees. Train images are rescaled by
`base · s` (`base` makes the image just cover `image_size`, `s ~ U(scale_range)`), randomly cropped to
`image_size` and flipped; val/test images are resized by `base` only. Set `image_size` to (1024, 2048) for
the official full-resolution protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from nas.data import transforms as T
from nas.data.registry import (
    IGNORE_INDEX,
    DataReport,
    DatasetInfo,
    DatasetSpec,
    check_splits,
    register_dataset,
)
from nas.errors import UserError

__all__ = [
    "LABELS",
    "ID_TO_TRAIN_ID",
    "NUM_CLASSES",
    "CLASS_NAMES",
    "PALETTE",
    "SPLITS",
    "CityscapesLabel",
    "CityscapesSummary",
    "Cityscapes",
    "find_pairs",
    "map_label_ids",
    "check_root",
    "CityscapesSpec",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"


@dataclass(frozen=True)
class CityscapesLabel:
    """One row of the official table: label id, name, train id (255 or -1 = ignored), colour."""

    id: int
    name: str
    train_id: int
    color: tuple[int, int, int]


# Official Cityscapes table (cityscapesscripts/helpers/labels.py): id, name, trainId, color.
LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel(0, "unlabeled", 255, (0, 0, 0)),
    CityscapesLabel(1, "ego vehicle", 255, (0, 0, 0)),
    CityscapesLabel(2, "rectification border", 255, (0, 0, 0)),
    CityscapesLabel(3, "out of roi", 255, (0, 0, 0)),
    CityscapesLabel(4, "static", 255, (0, 0, 0)),
    CityscapesLabel(5, "dynamic", 255, (111, 74, 0)),
    CityscapesLabel(6, "ground", 255, (81, 0, 81)),
    CityscapesLabel(7, "road", 0, (128, 64, 128)),
    CityscapesLabel(8, "sidewalk", 1, (244, 35, 232)),
    CityscapesLabel(9, "parking", 255, (250, 170, 160)),
    CityscapesLabel(10, "rail track", 255, (230, 150, 140)),
    CityscapesLabel(11, "building", 2, (70, 70, 70)),
    CityscapesLabel(12, "wall", 3, (102, 102, 156)),
    CityscapesLabel(13, "fence", 4, (190, 153, 153)),
    CityscapesLabel(14, "guard rail", 255, (180, 165, 180)),
    CityscapesLabel(15, "bridge", 255, (150, 100, 100)),
    CityscapesLabel(16, "tunnel", 255, (150, 120, 90)),
    CityscapesLabel(17, "pole", 5, (153, 153, 153)),
    CityscapesLabel(18, "polegroup", 255, (153, 153, 153)),
    CityscapesLabel(19, "traffic light", 6, (250, 170, 30)),
    CityscapesLabel(20, "traffic sign", 7, (220, 220, 0)),
    CityscapesLabel(21, "vegetation", 8, (107, 142, 35)),
    CityscapesLabel(22, "terrain", 9, (152, 251, 152)),
    CityscapesLabel(23, "sky", 10, (70, 130, 180)),
    CityscapesLabel(24, "person", 11, (220, 20, 60)),
    CityscapesLabel(25, "rider", 12, (255, 0, 0)),
    CityscapesLabel(26, "car", 13, (0, 0, 142)),
    CityscapesLabel(27, "truck", 14, (0, 0, 70)),
    CityscapesLabel(28, "bus", 15, (0, 60, 100)),
    CityscapesLabel(29, "caravan", 255, (0, 0, 90)),
    CityscapesLabel(30, "trailer", 255, (0, 0, 110)),
    CityscapesLabel(31, "train", 16, (0, 80, 100)),
    CityscapesLabel(32, "motorcycle", 17, (0, 0, 230)),
    CityscapesLabel(33, "bicycle", 18, (119, 11, 32)),
    CityscapesLabel(-1, "license plate", -1, (0, 0, 142)),
)

NUM_CLASSES = 19
_TRAIN_LABELS = sorted((lab for lab in LABELS if 0 <= lab.train_id < 255), key=lambda lab: lab.train_id)
CLASS_NAMES: tuple[str, ...] = tuple(lab.name for lab in _TRAIN_LABELS)
PALETTE: tuple[tuple[int, int, int], ...] = tuple(lab.color for lab in _TRAIN_LABELS)
# label id → train id; ids not in the table map to -1 so they can be detected
ID_TO_TRAIN_ID = np.full(256, -1, dtype=np.int16)
for _lab in LABELS:
    if _lab.id >= 0:
        ID_TO_TRAIN_ID[_lab.id] = _lab.train_id if 0 <= _lab.train_id < 255 else IGNORE_INDEX
del _lab


@dataclass(frozen=True)
class CityscapesSummary:
    """What :func:`check_root` found: image counts per split and city, and the image size(s)."""

    root: Path
    counts: dict[str, dict[str, int]]  # split → city → images
    image_sizes: tuple[tuple[int, int], ...]  # distinct (H, W)

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


def _check_split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    if not root.is_dir():
        raise UserError(f"Cityscapes root not found: {root}")
    if split not in SPLITS:
        raise UserError(f"Cityscapes has splits {', '.join(SPLITS)}, not {split!r}")
    img_dir, lab_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for d in (img_dir, lab_dir):
        if not d.is_dir():
            raise UserError(f"Cityscapes split folder not found: {d}")
    return img_dir, lab_dir


def _scan(root: Path, split: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Sorted (image, label) pairs of `split` and one message per image without its label or label without
    its image; a missing folder or an empty split is a UserError."""
    img_dir, lab_dir = _check_split_dirs(root, split)
    pairs, problems = [], []
    images = sorted(img_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
    for img in images:
        city = img.parent.name
        lab = lab_dir / city / (img.name[: -len(_IMAGE_SUFFIX)] + _LABEL_SUFFIX)
        if not lab.is_file():
            problems.append(f"Cityscapes label missing for {img}: expected {lab}")
        else:
            pairs.append((img, lab))
    if not images:
        raise UserError(f"no Cityscapes images (*{_IMAGE_SUFFIX}) under {img_dir}/<city>/")
    for lab in sorted(lab_dir.glob(f"*/*{_LABEL_SUFFIX}")):
        img = img_dir / lab.parent.name / (lab.name[: -len(_LABEL_SUFFIX)] + _IMAGE_SUFFIX)
        if not img.is_file():
            problems.append(f"Cityscapes image missing for label {lab}: expected {img}")
    return pairs, problems


def find_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """Sorted (image, label) paths of `split`; a missing folder or an image without its label is a UserError."""
    pairs, problems = _scan(Path(root), split)
    missing_label = [p for p in problems if p.startswith("Cityscapes label missing")]
    if missing_label:
        raise UserError(missing_label[0])
    return pairs


def map_label_ids(ids: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Label ids `[H, W]` → train ids `uint8 [H, W]` (ignore 255); an id outside the table is a UserError."""
    ids = np.asarray(ids)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > 255):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise UserError(f"Cityscapes label {path} holds id {bad}, which is not in the label table")
    out = ID_TO_TRAIN_ID[ids.astype(np.intp)]
    if (out < 0).any():
        bad = int(ids[out < 0].flat[0])
        raise UserError(f"Cityscapes label {path} holds id {bad}, which is not in the label table")
    return out.astype(np.uint8)


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise UserError(f"cannot read Cityscapes image {path}: {exc}") from None


def _read_label(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise UserError(f"Cityscapes label {path} is a {im.mode} image, expected single-channel label ids")
            return np.asarray(im)
    except OSError as exc:
        raise UserError(f"cannot read Cityscapes label {path}: {exc}") from None


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def _check_pair_sizes(img: Path, lab: Path) -> tuple[int, int]:
    size, lab_size = _image_size(img), _image_size(lab)
    if size != lab_size:
        raise UserError(
            f"Cityscapes label {lab} is {lab_size[0]}x{lab_size[1]} but its image is {size[0]}x{size[1]}"
        )
    return size


class Cityscapes(Dataset):
    """One split as a torch dataset of dicts: "image" `float32 [3, H, W]`, "label" `int64 [H, W]`, "index".

    A key may be `(index, augment_seed)` (what :func:`nas.data.build_loader` samples) so random scale, crop
    and flip are reproducible; a plain int index draws them from a generator seeded by the index.
    """

    name = "cityscapes"

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_size: tuple[int, int],
        augment: bool = False,
        scale_range: tuple[float, float] = (0.75, 1.5),
        flip: bool = True,
    ):
        self.root, self.split = Path(root), split
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.augment, self.scale_range, self.flip = augment, tuple(scale_range), flip
        self.pairs = find_pairs(self.root, split)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image `uint8 [H, W, 3]` and train-id label `uint8 [H, W]` at full resolution, checked."""
        img_path, lab_path = self.pairs[index]
        image, ids = _read_image(img_path), _read_label(lab_path)
        if image.shape[:2] != ids.shape[:2]:
            raise UserError(
                f"Cityscapes label {lab_path} is {ids.shape[0]}x{ids.shape[1]} "
                f"but its image is {image.shape[0]}x{image.shape[1]}"
            )
        return image, map_label_ids(ids, lab_path)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index, aug_seed = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), int(key))
        if not 0 <= index < len(self):
            raise IndexError(f"Cityscapes {self.split} has {len(self)} images, index {index} is out of range")
        image, label = self.load(index)
        x, y = T.prepare_pair(image, label, self.image_size, self.augment, aug_seed, self.scale_range, self.flip,
                              ignore_index=IGNORE_INDEX)
        return {"image": x, "label": y, "index": index}

    def label_counts(self) -> np.ndarray:
        """Pixel count per train id `[19]` over the split at full resolution (reads every label)."""
        from tqdm import tqdm

        counts = np.zeros(NUM_CLASSES, dtype=np.int64)
        for _, lab in tqdm(self.pairs, desc=f"cityscapes {self.split} labels", unit="img", leave=False,
                           disable=None):  # None: no bar when stderr is not a terminal
            train = map_label_ids(_read_label(lab), lab)
            counts += np.bincount(train.ravel(), minlength=256)[:NUM_CLASSES]
        return counts


def _splits_to_check(root: Path, splits: Iterable[str] | None) -> list[str]:
    """`splits`, or when None each split whose image or label folder exists under `root` (at least one must); a
    missing root is a UserError either way."""
    if not root.is_dir():
        raise UserError(f"Cityscapes root not found: {root}")
    if splits is not None:
        return list(splits)
    splits = [s for s in SPLITS if (root / "leftImg8bit" / s).is_dir() or (root / "gtFine" / s).is_dir()]
    if not splits:
        raise UserError(f"no Cityscapes split folders under {root} (expected {root / 'leftImg8bit' / 'train'})")
    return splits


def check_root(root: str | Path, splits: Iterable[str] | None = None, check_ids: bool = True) -> CityscapesSummary:
    """Validate a Cityscapes tree: folders, image/label pairs, sizes and (with `check_ids`) every label id.

    `splits=None` checks each split whose folders exist (at least one must). The first problem raises a
    one-line UserError naming the path.
    """
    from tqdm import tqdm

    root = Path(root)
    splits = _splits_to_check(root, splits)
    counts: dict[str, dict[str, int]] = {}
    sizes: set[tuple[int, int]] = set()
    for split in splits:
        pairs = find_pairs(root, split)
        per_city: dict[str, int] = {}
        for img, lab in tqdm(pairs, desc=f"checking {split}", unit="img", leave=False, disable=len(pairs) < 50 or None):
            sizes.add(_check_pair_sizes(img, lab))
            if check_ids:
                map_label_ids(_read_label(lab), lab)
            per_city[img.parent.name] = per_city.get(img.parent.name, 0) + 1
        counts[split] = per_city
    log.debug("Cityscapes tree %s checked: %s", root, {s: sum(c.values()) for s, c in counts.items()})
    return CityscapesSummary(root=root, counts=counts, image_sizes=tuple(sorted(sizes)))


@register_dataset("cityscapes")
class CityscapesSpec(DatasetSpec):
    """`data.name: cityscapes`: the tree under `data.root` (leftImg8bit/, gtFine/)."""

    def info(self, cfg) -> DatasetInfo:
        return DatasetInfo("cityscapes", NUM_CLASSES, CLASS_NAMES, PALETTE, SPLITS)

    def build(self, cfg, split: str, augment: bool) -> Cityscapes:
        return Cityscapes(cfg.root, split, cfg.image_size, augment=augment, scale_range=cfg.scale_range,
                          flip=cfg.flip)

    def check_config(self, cfg) -> None:
        if not Path(cfg.root).is_dir():
            raise UserError(f"Cityscapes root not found: {cfg.root}")

    def check(self, cfg, splits: Iterable[str] | None = None) -> DataReport:
        root = Path(cfg.root)
        splits = _splits_to_check(root, splits)
        return check_splits(DataReport(self.info(cfg), str(root)), splits, lambda split: _scan(root, split),
                            lambda lab: map_label_ids(_read_label(lab), lab))

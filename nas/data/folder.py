"""Your own data: `data.name: folder`, an mmsegmentation-style tree of images and masks under `data.root`.

Default layout (every name is a `data.folder.*` option, `{split}` stands for the split)::

    ROOT/classes.yaml                      # class names, optional RGB colours, optional ignore index
    ROOT/images/{train,val}/NAME.{png,jpg,jpeg}
    ROOT/masks/{train,val}/NAME.png        # class indices (255 = ignore), or RGB colours from classes.yaml

`classes.yaml` is a list of names, or a mapping ``{classes: [...], ignore_index: 255, ignore_color: [r, g, b]}``
whose classes are names or ``{name: ..., color: [r, g, b]}``. A mask is an 8-bit index PNG (L mode), a palette
PNG (P mode: its indices are read, its colours are not) or an RGB PNG whose colours are the classes' colours
(`ignore_color`, if given, is ignore). With `reduce_zero_label` (mmseg's convention, index masks only) index 0
is ignore and the others shift down by one. Inside the pipeline ignore is always 255.

Building a split checks its structure (every image has its mask and the other way round, sizes match: headers
only) and refuses a broken tree with a one-line :class:`~nas.errors.UserError` naming the first problem; masks
are decoded per item, and a bad value (a label outside the classes, a colour not in the classes file) is a
one-line UserError naming the file and the pixel. ``nas data check`` lists every problem at once.

Train items get Cityscapes' random scale / crop / flip; val items are resized to fit inside `data.image_size`
and padded up to it (ignore), so images of several sizes batch together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch.utils.data import Dataset

from nas.data import transforms as T
from nas.data.registry import (
    IGNORE_INDEX,
    DataReport,
    DatasetInfo,
    DatasetSpec,
    check_splits,
    error_reason,
    image_size_of,
    register_dataset,
    shown,
)
from nas.errors import ConfigError, UserError

__all__ = [
    "FolderClasses",
    "FolderDataset",
    "FolderSpec",
    "read_classes",
    "read_mask",
    "scan_split",
    "default_palette",
]

log = logging.getLogger(__name__)

_MASK_MODES = ("L", "P", "I", "I;16", "RGB", "RGBA")


@dataclass(frozen=True)
class FolderClasses:
    """The classes file, read: names, colours (None when the file gives none), the mask value meaning ignore,
    and the RGB-mask colour meaning ignore."""

    path: Path
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] | None
    ignore_index: int = IGNORE_INDEX
    ignore_color: tuple[int, int, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)


def default_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """Pascal VOC's colour map (the bit-interleaved one its P-mode masks use) for `n` classes."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return tuple(out)


def _color(value, where: str, path: Path) -> tuple[int, int, int]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 3
          and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value))
    if not ok:
        raise UserError(f"classes file {shown(path)}: {where} must be [r, g, b] with integers 0-255, got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))


def read_classes(path: str | Path) -> FolderClasses:
    """Read and validate a classes file; any problem is a one-line UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"classes file not found: {shown(path)} (the folder dataset needs one: a list of class "
                        "names, see experiments/configs/datasets/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"classes file {shown(path)} is not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise UserError(f"classes file {shown(path)} is not UTF-8 text") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError(f"cannot read classes file {shown(path)}: {error_reason(exc, path)}") from None
    ignore_index, ignore_color = IGNORE_INDEX, None
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"classes", "ignore_index", "ignore_color"}, key=str)
        if unknown:
            raise UserError(f"classes file {shown(path)}: unknown key {str(unknown[0])!r} "
                            "(known: classes, ignore_color, ignore_index)")
        if "classes" not in data:
            raise UserError(f"classes file {shown(path)}: no 'classes' list")
        ignore_index = data.get("ignore_index", IGNORE_INDEX)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or not 0 <= ignore_index <= 65535:
            raise UserError(f"classes file {shown(path)}: ignore_index must be an integer 0-65535, "
                            f"got {ignore_index!r}")
        if data.get("ignore_color") is not None:
            ignore_color = _color(data["ignore_color"], "ignore_color", path)
        data = data["classes"]
    if not isinstance(data, list) or not data:
        raise UserError(f"classes file {shown(path)} must hold a non-empty list of class names (or a mapping with "
                        f"one under 'classes'), got {type(data).__name__}")
    names, colors = [], []
    for i, entry in enumerate(data):
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"name", "color"}, key=str)
            if unknown:
                raise UserError(f"classes file {shown(path)}: class {i} has an unknown key {str(unknown[0])!r} "
                                "(known: name, color)")
            name = entry.get("name")
            colors.append(_color(entry["color"], f"the color of class {i}", path) if "color" in entry else None)
        else:
            name = entry
            colors.append(None)
        if isinstance(name, (int, float)) and not isinstance(name, bool):
            name = str(name)
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"classes file {shown(path)}: class {i} needs a name (a string), got {name!r}")
        names.append(name.strip())
    if len(names) > 255:
        raise UserError(f"classes file {shown(path)}: {len(names)} classes, at most 255 fit (255 is ignore)")
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise UserError(f"classes file {shown(path)}: class name {dup!r} appears twice")
    given = [c is not None for c in colors]
    if any(given) and not all(given):
        missing = names[given.index(False)]
        raise UserError(f"classes file {shown(path)}: class {missing!r} has no color but others do (give all or none)")
    palette = tuple(colors) if all(given) else None  # type: ignore[arg-type]
    if palette is not None:
        dup_c = next((c for i, c in enumerate(palette) if c in palette[:i]), None)
        if dup_c is not None:
            raise UserError(f"classes file {shown(path)}: color {list(dup_c)} belongs to two classes")
        if ignore_color is not None and ignore_color in palette:
            raise UserError(f"classes file {shown(path)}: ignore_color {list(ignore_color)} is also the color of "
                            f"class {names[palette.index(ignore_color)]!r}")
    return FolderClasses(path, tuple(names), palette, int(ignore_index), ignore_color)


# --------------------------------------------------------------------------- masks


def _first_pixel(bad: np.ndarray) -> tuple[int, int]:
    """(x, y) of the first True pixel in raster order."""
    y, x = divmod(int(np.flatnonzero(bad.ravel())[0]), bad.shape[1])
    return x, y


def _ids_from_indices(raw: np.ndarray, path: Path, classes: FolderClasses, reduce_zero_label: bool) -> np.ndarray:
    v = raw.astype(np.int64)
    k = classes.num_classes
    ignore = v == classes.ignore_index
    if reduce_zero_label:
        ignore |= v == 0
        v = v - 1
    bad = ~ignore & ((v < 0) | (v >= k))
    if bad.any():
        x, y = _first_pixel(bad)
        shift = " after reduce_zero_label" if reduce_zero_label else ""
        raise UserError(f"mask {shown(path)}: pixel ({x}, {y}) has label {int(raw[y, x])}, out of range for "
                        f"{k} classes{shift} (0-{k - 1}; {classes.ignore_index} = ignore)")
    return np.where(ignore, IGNORE_INDEX, v).astype(np.uint8)


def _ids_from_colors(rgb: np.ndarray, path: Path, classes: FolderClasses) -> np.ndarray:
    if classes.colors is None:
        raise UserError(f"mask {shown(path)} is an RGB image but {shown(classes.path)} gives no class colors (give "
                        "each class a color, or save masks as class indices)")
    rgb = rgb[..., :3].astype(np.int32)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    uniq, inv = np.unique(codes.ravel(), return_inverse=True)
    table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(classes.colors)}
    if classes.ignore_color is not None:
        r, g, b = classes.ignore_color
        table[(r << 16) | (g << 8) | b] = IGNORE_INDEX
    lut = np.array([table.get(int(c), -1) for c in uniq], dtype=np.int64)
    ids = lut[inv].reshape(codes.shape)
    if (lut < 0).any():
        x, y = _first_pixel(ids < 0)
        color = tuple(int(c) for c in rgb[y, x])
        raise UserError(f"mask {shown(path)}: pixel ({x}, {y}) has color {color}, which is not a class color in "
                        f"{shown(classes.path)}")
    return ids.astype(np.uint8)


def read_mask(path: str | Path, classes: FolderClasses, reduce_zero_label: bool = False) -> np.ndarray:
    """A mask file → class ids `uint8 [H, W]` (ignore 255); an unreadable file, an unsupported image mode, a
    label out of range or an unknown colour is a one-line UserError naming the file (and the pixel)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in _MASK_MODES:
                raise UserError(f"mask {shown(path)} is a {mode} image; expected class indices (an L or P mode PNG) "
                                "or RGB class colors")
            arr = np.asarray(im)
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read mask {shown(path)}: {error_reason(exc, path)}") from None
    if mode in ("RGB", "RGBA"):
        return _ids_from_colors(arr, path, classes)
    return _ids_from_indices(arr, path, classes, reduce_zero_label)


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read image {shown(path)}: {error_reason(exc, path)}") from None


# --------------------------------------------------------------------------- layout


def _split_path(root: Path, template: str, split: str) -> Path:
    p = Path(template.replace("{split}", split))
    return p if p.is_absolute() else root / p


def _suffix_of(name: str, suffixes: Iterable[str]) -> str | None:
    low = name.lower()
    return next((s for s in suffixes if low.endswith(s.lower())), None)


def _list_files(folder: Path, suffixes: Iterable[str]) -> dict[str, list[Path]]:
    """NAME (path relative to `folder`, without the suffix) → the files under `folder` ending in a suffix."""
    suffixes = sorted(suffixes, key=len, reverse=True)  # the longest matching suffix wins ("_L.png" over ".png")
    out: dict[str, list[Path]] = {}
    for p in sorted(folder.rglob("*")):
        if p.name.startswith(".") or not p.is_file():
            continue
        suffix = _suffix_of(p.name, suffixes)
        if suffix is None:
            continue
        rel = p.relative_to(folder).as_posix()
        out.setdefault(rel[: len(rel) - len(suffix)], []).append(p)
    return out


def _read_split_file(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"split file not found: {shown(path)}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"split file {shown(path)} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read split file {shown(path)}: {error_reason(exc, path)}") from None
    names = []
    for line in text.splitlines():
        name = line.strip()
        if name and not name.startswith("#"):
            names.append(name.split()[0])  # VOC's ImageSets/Main lists have a second column
    return names


def scan_split(cfg, split: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """The split's (image, mask) pairs, sorted by name, and one line per pairing problem (an image without its
    mask, a mask without its image, a name listed in the split file without its image, two images of one
    name). A missing folder or split file, or a split with no image, is a UserError."""
    fc = cfg.folder
    root = Path(cfg.root)
    img_dir, mask_dir = _split_path(root, fc.image_dir, split), _split_path(root, fc.mask_dir, split)
    for what, d in (("image", img_dir), ("mask", mask_dir)):
        if not d.is_dir():
            raise UserError(f"{what} folder of the {split} split not found: {shown(d)}")
    patterns = ", ".join(f"*{s}" for s in fc.image_suffix)
    images = _list_files(img_dir, fc.image_suffix)
    problems: list[str] = []
    if fc.split_file:
        list_path = _split_path(root, fc.split_file, split)
        names = _read_split_file(list_path)
        if not names:
            raise UserError(f"the {split} split is empty: split file {shown(list_path)} lists no image")
        masks = None
    else:
        names = sorted(images)
        if not names:
            raise UserError(f"the {split} split is empty: no image ({patterns}) under {shown(img_dir)}")
        masks = _list_files(mask_dir, [fc.mask_suffix])
    pairs = []
    for name in names:
        found = images.get(name)
        if not found:
            problems.append(f"image {name!r} listed in {shown(list_path)} not found under {shown(img_dir)} "
                            f"({patterns})")
            continue
        if len(found) > 1:
            problems.append(f"two images named {name!r}: {', '.join(shown(p) for p in found)}")
            continue
        mask = mask_dir / (name + fc.mask_suffix)
        if not mask.is_file():
            problems.append(f"mask missing for image {shown(found[0])}: expected {shown(mask)}")
            continue
        pairs.append((found[0], mask))
    if masks is not None:
        for name in sorted(set(masks) - set(images)):
            problems.append(f"image missing for mask {shown(masks[name][0])}: expected {shown(img_dir / name)}"
                            f"{{{','.join(fc.image_suffix)}}}")
    return pairs, problems


# --------------------------------------------------------------------------- dataset


class FolderDataset(Dataset):
    """One split as a torch dataset of dicts: "image" `float32 [3, H, W]`, "label" `int64 [H, W]`, "index".

    A key may be `(index, augment_seed)` (what :func:`nas.data.build_loader` samples) so random scale, crop and
    flip are reproducible; a plain int index draws them from the index.
    """

    name = "folder"

    def __init__(self, pairs: list[tuple[Path, Path]], classes: FolderClasses, split: str,
                 image_size: tuple[int, int], augment: bool = False, scale_range: tuple[float, float] = (0.75, 1.5),
                 flip: bool = True, reduce_zero_label: bool = False):
        self.pairs, self.classes, self.split = list(pairs), classes, split
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.augment, self.scale_range, self.flip = augment, tuple(scale_range), flip
        self.reduce_zero_label = reduce_zero_label
        self._counts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image `uint8 [H, W, 3]` and class ids `uint8 [H, W]` (ignore 255) at full resolution, checked."""
        img_path, mask_path = self.pairs[index]
        image = _read_image(img_path)
        label = read_mask(mask_path, self.classes, self.reduce_zero_label)
        if image.shape[:2] != label.shape:
            raise UserError(f"mask {shown(mask_path)} is {label.shape[0]}x{label.shape[1]} but its image "
                            f"{shown(img_path)} is {image.shape[0]}x{image.shape[1]}")
        return image, label

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index, aug_seed = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), int(key))
        if not 0 <= index < len(self):
            raise IndexError(f"folder {self.split} has {len(self)} images, index {index} is out of range")
        image, label = self.load(index)
        x, y = T.prepare_pair(image, label, self.image_size, self.augment, aug_seed, self.scale_range, self.flip,
                              fit=True, ignore_index=IGNORE_INDEX)
        return {"image": x, "label": y, "index": index}

    def label_counts(self) -> np.ndarray:
        """Pixel count per class `[K]` over the split at full resolution (reads every mask once, then cached)."""
        if self._counts is None:
            from tqdm import tqdm

            counts = np.zeros(self.classes.num_classes, dtype=np.int64)
            for _, mask in tqdm(self.pairs, desc=f"folder {self.split} masks", unit="img", leave=False,
                                disable=len(self.pairs) < 50 or None):
                ids = read_mask(mask, self.classes, self.reduce_zero_label)
                counts += np.bincount(ids.ravel(), minlength=256)[: self.classes.num_classes]
            self._counts = counts
        return self._counts.copy()


@register_dataset("folder")
class FolderSpec(DatasetSpec):
    """`data.name: folder`: images and masks under `data.root`, laid out as `data.folder` says."""

    def classes(self, cfg) -> FolderClasses:
        fc = cfg.folder
        path = Path(fc.classes_file)
        classes = read_classes(path if path.is_absolute() else Path(cfg.root) / path)
        k, ig = classes.num_classes, classes.ignore_index
        lo, hi = (1, k) if fc.reduce_zero_label else (0, k - 1)
        if lo <= ig <= hi:
            raise UserError(f"classes file {shown(classes.path)}: ignore_index {ig} is also a class label "
                            f"({lo}-{hi}{' with reduce_zero_label' if fc.reduce_zero_label else ''})")
        return classes

    def info(self, cfg) -> DatasetInfo:
        classes = self.classes(cfg)
        palette = classes.colors or default_palette(classes.num_classes)
        return DatasetInfo("folder", classes.num_classes, classes.names, palette, tuple(cfg.folder.splits))

    def check_config(self, cfg) -> None:
        fc = cfg.folder
        if not Path(cfg.root).is_dir():
            raise UserError(f"folder dataset root not found: {shown(cfg.root)}")
        if not fc.splits or any(not s or not s.isprintable() or "/" in s for s in fc.splits):
            raise ConfigError(f"config key 'data.folder.splits': expected split names, got {list(fc.splits)!r}")
        if not fc.image_suffix or any(not s for s in fc.image_suffix) or not fc.mask_suffix:
            raise ConfigError("config keys 'data.folder.image_suffix' / 'mask_suffix' must not be empty")
        if fc.split_file is None and len(fc.splits) > 1 and "{split}" not in fc.image_dir:
            raise ConfigError(f"config key 'data.folder.image_dir': {fc.image_dir!r} has no {{split}} and "
                              "data.folder.split_file is not set, so every split would hold the same images")
        self.classes(cfg)
        for split in fc.splits:
            root = Path(cfg.root)
            for what, template in (("image", fc.image_dir), ("mask", fc.mask_dir)):
                d = _split_path(root, template, split)
                if not d.is_dir():
                    raise UserError(f"{what} folder of the {split} split not found: {shown(d)}")
            if fc.split_file:
                f = _split_path(root, fc.split_file, split)
                if not f.is_file():
                    raise UserError(f"split file not found: {shown(f)}")

    def build(self, cfg, split: str, augment: bool) -> FolderDataset:
        """The split, after its structural check (pairs and their sizes, from the headers); masks are
        decoded per item."""
        classes = self.classes(cfg)
        pairs, problems = scan_split(cfg, split)
        for img, mask in pairs:
            if problems:
                break
            size, mask_size = image_size_of(img, "image"), image_size_of(mask, "mask")
            if size != mask_size:
                problems.append(f"mask {shown(mask)} is {mask_size[0]}x{mask_size[1]} but its image {shown(img)} "
                                f"is {size[0]}x{size[1]}")
        if problems:
            more = f" (and {len(problems) - 1} more; `nas data check` lists them)" if len(problems) > 1 else ""
            raise UserError(f"the {split} split of {shown(cfg.root)} is broken: {problems[0]}{more}")
        return FolderDataset(pairs, classes, split, cfg.image_size, augment=augment, scale_range=cfg.scale_range,
                             flip=cfg.flip, reduce_zero_label=cfg.folder.reduce_zero_label)

    def check(self, cfg, splits: Iterable[str] | None = None) -> DataReport:
        if not Path(cfg.root).is_dir():
            raise UserError(f"folder dataset root not found: {shown(cfg.root)}")
        classes = self.classes(cfg)
        return check_splits(DataReport(self.info(cfg), str(cfg.root)), splits or cfg.folder.splits,
                            lambda split: scan_split(cfg, split),
                            lambda m: read_mask(m, classes, cfg.folder.reduce_zero_label), decode_images=True)

"""Digit scenes: the embedded default dataset, generated offline and deterministically.

Each image composes a few real handwritten digits (scikit-learn's bundled 8x8 `load_digits`, no download),
upscaled smoothly and placed at sizes from about 10 px to most of the frame height, in colours lighter than the
(darker) cluttered textured background, with distractor blobs and strokes of any colour (labelled background) and
pixel noise. Objects at so many scales
make the 1/8, 1/16 and 1/32 paths of a searched network matter.

Classes: 0 = background, 1..10 = digits 0..9 (class id = digit + 1); a digit's soft edge is ignore (255).
A per-pixel size map gives each digit pixel its size bucket (1 small, 2 medium, 3 large; 0 elsewhere).

Image `i` of a split is a pure function of `(seed, split, i)`. Train and val draw from disjoint digit pools.
Generated arrays are cached as one `.npz` per split under `DataConfig.root`, keyed by seed, size, count and
:data:`GENERATOR_VERSION`; a corrupt cache file is regenerated.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import Dataset

from nas.data.registry import IGNORE_INDEX, DataReport, DatasetInfo, DatasetSpec, register_dataset
from nas.data.transforms import normalize
from nas.errors import UserError
from nas.io import atomic_write_bytes

__all__ = [
    "GENERATOR_VERSION",
    "NUM_CLASSES",
    "CLASS_NAMES",
    "PALETTE",
    "SIZE_BUCKETS",
    "SPLITS",
    "SceneArrays",
    "DigitScenes",
    "digit_pools",
    "generate_scene",
    "generate_split",
    "load_or_generate",
    "cache_path",
    "DigitScenesSpec",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump when the generator changes: old caches are then ignored
NUM_CLASSES = 11
CLASS_NAMES = ("background", *(str(d) for d in range(10)))
PALETTE = (
    (72, 72, 72),  # background: dark grey, so ignore (black) stays visible in previews
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (255, 221, 0),
)
SIZE_BUCKETS = ("small", "medium", "large")  # size-map values 1, 2, 3
SPLITS = ("train", "val")

_VAL_FRACTION = 0.2  # of each digit's 8x8 samples, held out for val
_POOL_SEED = 8_1797  # fixed: the pools do not depend on the generation seed
_EDGE_LO, _EDGE_HI = 0.25, 0.5  # upscaled intensity: < LO background, [LO, HI) ignore, >= HI digit
_SMALL, _MEDIUM = 1 / 8, 1 / 3  # bucket thresholds on the placed digit height, relative to image height
_DIGITS_PER_IMAGE = (2, 7)
_HEIGHT_RANGE = (0.08, 0.9)  # placed digit height, relative to image height (log-uniform)
_DISTRACTORS = (2, 6)  # blobs and strokes per image
_DISTRACTOR_ALPHA = (0.4, 0.9)
_TEXTURE_AMPS = ((0.1, 0.35), (0.03, 0.15))  # coarse and fine noise octaves
_BG_LUMA_MAX = 0.5  # backgrounds are squeezed into [0, this]: digits are drawn lighter than what is under them
_MIN_CONTRAST = 0.45  # least luminance a digit has above the mean background under it
_PIXEL_NOISE = (0.01, 0.05)


@dataclass(frozen=True)
class SceneArrays:
    """One split's arrays: images `uint8 [N, H, W, 3]`, labels and sizes `uint8 [N, H, W]`, and one row per
    placed digit in `objects` `int32 [M, 4]` = (image index, class id, placed height px, size bucket)."""

    images: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    objects: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])


# --------------------------------------------------------------------------- digit pools


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@functools.lru_cache(maxsize=2)
def digit_pools(split: str) -> np.ndarray:
    """Indices into `load_digits()` that `split` may use; stratified 80/20, train and val are disjoint."""
    if split not in SPLITS:
        raise ValueError(f"digit scenes split must be one of {SPLITS} but got {split!r}.")
    _, target = _load_digits()
    rng = np.random.default_rng(_POOL_SEED)
    chosen = []
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(target == d))
        n_val = round(len(idx) * _VAL_FRACTION)
        chosen.append(idx[:n_val] if split == "val" else idx[n_val:])
    return np.sort(np.concatenate(chosen))


def _item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"digit_scenes/{seed}/{split}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _bucket(height: float, image_h: int) -> int:
    if height < _SMALL * image_h:
        return 1
    if height < _MEDIUM * image_h:
        return 2
    return 3


# --------------------------------------------------------------------------- background and clutter


def _upsample(field: np.ndarray, h: int, w: int) -> np.ndarray:
    """Smoothly upsample `[h0, w0, C]` float to `[h, w, C]` (bicubic, per channel)."""
    chans = [np.asarray(Image.fromarray(field[..., c]).resize((w, h), Image.BICUBIC)) for c in range(field.shape[2])]
    return np.stack(chans, axis=-1)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured RGB background in [0, `_BG_LUMA_MAX`]: gradient + smoothed noise octaves, sometimes stripes."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    theta = rng.uniform(0, 2 * np.pi)
    t = (xx * np.cos(theta) + yy * np.sin(theta)) / np.hypot(h, w) + 0.5
    img = c0 + (c1 - c0) * np.clip(t, 0, 1)[..., None]
    for cell, amp in ((32, rng.uniform(*_TEXTURE_AMPS[0])), (8, rng.uniform(*_TEXTURE_AMPS[1]))):
        coarse = rng.normal(0, 1, (max(2, h // cell), max(2, w // cell), 3)).astype(np.float32)
        img = img + amp * _upsample(coarse, h, w)
    if rng.random() < 0.5:
        period = rng.uniform(4, 24)
        phi = rng.uniform(0, 2 * np.pi)
        stripe = np.sin(2 * np.pi * (xx * np.cos(phi) + yy * np.sin(phi)) / period)
        img = img + rng.uniform(0.05, 0.2) * stripe[..., None] * rng.uniform(-1, 1, 3)
    return (_BG_LUMA_MAX * np.clip(img, 0, 1)).astype(np.float32)


def _distractors(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Blend soft blobs and strokes (background class) into `img`."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(_DISTRACTORS[0], _DISTRACTORS[1] + 1))):
        mask = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(mask)
        if rng.random() < 0.5:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            rx, ry = rng.uniform(3, h * 0.4), rng.uniform(3, h * 0.4)
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
            blur = rng.uniform(1, 6)
        else:
            pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(int(rng.integers(2, 5)))]
            draw.line(pts, fill=255, width=int(rng.integers(1, 7)), joint="curve")
            blur = rng.uniform(0.5, 2)
        a = np.asarray(mask.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32) / 255.0
        a = a[..., None] * rng.uniform(*_DISTRACTOR_ALPHA)
        img = img * (1 - a) + rng.uniform(0, 1, 3).astype(np.float32) * a
    return img


# --------------------------------------------------------------------------- digits


def _glyph(sample: np.ndarray, box_h: int, box_w: int) -> np.ndarray:
    """An 8x8 digit (values in [0, 1]) padded by one zero cell each side and upscaled bicubically so its
    8x8 box becomes `box_h x box_w`; returns the padded canvas `[box_h*10/8, box_w*10/8]` in [0, 1]."""
    padded = np.pad(sample, 1)
    ph, pw = round(box_h * 10 / 8), round(box_w * 10 / 8)
    up = np.asarray(Image.fromarray(padded.astype(np.float32), mode="F").resize((pw, ph), Image.BICUBIC))
    return np.clip(up, 0, 1)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour at least `_MIN_CONTRAST` lighter (in luminance) than the mean colour `under` it.

    One contrast polarity (light digits): with both polarities a network from scratch needs several times the
    iterations before it tells digits apart (measured while calibrating generator version 2)."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    colour = rng.uniform(0, 1, 3).astype(np.float32)
    lum = float(colour @ weights)
    target = float(rng.uniform(min(1.0, float(under @ weights) + _MIN_CONTRAST), 1.0))
    if lum < target:  # blend toward white just enough to reach the target luminance
        colour = colour + (target - lum) / (1 - lum) * (1 - colour)
    return colour


def generate_scene(seed: int, split: str, index: int, image_size: tuple[int, int]) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int, int]]
]:
    """Image `index` of `split`: (`uint8 [H, W, 3]` image, `uint8 [H, W]` label, `uint8 [H, W]` size map,
    [(class id, placed height, bucket) per digit]). A pure function of its arguments."""
    h, w = image_size
    rng = _item_rng(seed, split, index)
    images, target = _load_digits()
    pool = digit_pools(split)

    img = _distractors(rng, _background(rng, h, w))
    label = np.zeros((h, w), dtype=np.uint8)
    size = np.zeros((h, w), dtype=np.uint8)
    h_min, h_max = max(8.0, _HEIGHT_RANGE[0] * h), _HEIGHT_RANGE[1] * h
    n = int(rng.integers(_DIGITS_PER_IMAGE[0], _DIGITS_PER_IMAGE[1] + 1))
    heights = np.sort(np.exp(rng.uniform(np.log(h_min), np.log(h_max), n)))[::-1]  # large first, small on top
    objects = []
    for box_h_f in heights:
        k = int(pool[rng.integers(len(pool))])
        cls = int(target[k]) + 1
        box_h = max(1, round(float(box_h_f)))
        box_w = min(w, max(1, round(box_h * rng.uniform(0.65, 1.0))))
        glyph = _glyph(images[k], box_h, box_w)
        gh, gw = glyph.shape
        pad_y, pad_x = (gh - box_h) // 2, (gw - box_w) // 2
        # a few candidate places; keep the one that covers the fewest already-placed digit pixels
        best, best_cover = (0, 0), None
        for _ in range(6):
            y0, x0 = int(rng.integers(0, h - box_h + 1)), int(rng.integers(0, w - box_w + 1))
            cover = int((label[y0 : y0 + box_h, x0 : x0 + box_w] > 0).sum())
            if best_cover is None or cover < best_cover:
                best, best_cover = (y0, x0), cover
        y0, x0 = best[0] - pad_y, best[1] - pad_x
        ys, xs = slice(max(y0, 0), min(y0 + gh, h)), slice(max(x0, 0), min(x0 + gw, w))
        a = glyph[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        region = img[ys, xs]
        colour = _contrasting_colour(rng, region.reshape(-1, 3).mean(0))
        alpha = np.clip((a - 0.6 * _EDGE_LO) / (_EDGE_HI - 0.6 * _EDGE_LO), 0, 1) * rng.uniform(0.75, 1.0)
        shade = 1 + rng.uniform(0, 0.12) * rng.normal(0, 1, a.shape).astype(np.float32)
        img[ys, xs] = region * (1 - alpha[..., None]) + (colour * shade[..., None]) * alpha[..., None]
        core, edge = a >= _EDGE_HI, (a >= _EDGE_LO) & (a < _EDGE_HI)
        bucket = _bucket(box_h, h)
        label[ys, xs][core], size[ys, xs][core] = cls, bucket
        label[ys, xs][edge], size[ys, xs][edge] = IGNORE_INDEX, 0
        objects.append((cls, box_h, bucket))

    img = img * rng.uniform(0.7, 1.15) + rng.uniform(-0.1, 0.1)  # global contrast / brightness
    img = img + rng.normal(0, rng.uniform(*_PIXEL_NOISE), img.shape)
    image = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return image, label, size, objects


def generate_split(seed: int, split: str, count: int, image_size: tuple[int, int]) -> SceneArrays:
    """All `count` images of `split` (with a progress bar)."""
    from tqdm import tqdm

    h, w = image_size
    images = np.empty((count, h, w, 3), dtype=np.uint8)
    labels = np.empty((count, h, w), dtype=np.uint8)
    sizes = np.empty((count, h, w), dtype=np.uint8)
    objects = []
    for i in tqdm(range(count), desc=f"digit scenes {split}", unit="img", leave=False, disable=count < 50):
        images[i], labels[i], sizes[i], objs = generate_scene(seed, split, i, image_size)
        objects.extend((i, *o) for o in objs)
    obj = np.asarray(objects, dtype=np.int32).reshape(-1, 4)
    return SceneArrays(images, labels, sizes, obj)


# --------------------------------------------------------------------------- cache


def cache_path(root: str | Path, seed: int, split: str, count: int, image_size: tuple[int, int]) -> Path:
    """Cache file of one split; its name carries every input that changes the arrays."""
    h, w = image_size
    return Path(root) / f"digit_scenes_v{GENERATOR_VERSION}_seed{seed}_{h}x{w}_{split}{count}.npz"


def _read_cache(path: Path, count: int, image_size: tuple[int, int]) -> SceneArrays | None:
    """The cached arrays, or None (with a warning) when the file is unreadable or has the wrong shapes."""
    h, w = image_size
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = SceneArrays(z["images"], z["labels"], z["sizes"], z["objects"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("digit scenes cache %s is unreadable (%s); regenerating", path, type(exc).__name__)
        return None
    ok = (
        arrays.images.shape == (count, h, w, 3)
        and arrays.labels.shape == arrays.sizes.shape == (count, h, w)
        and all(a.dtype == np.uint8 for a in (arrays.images, arrays.labels, arrays.sizes))
        and arrays.objects.ndim == 2
        and arrays.objects.shape[1] == 4
    )
    if not ok:
        log.warning("digit scenes cache %s has unexpected contents; regenerating", path)
        return None
    return arrays


def load_or_generate(
    root: str | Path, seed: int, split: str, count: int, image_size: tuple[int, int]
) -> SceneArrays:
    """Load one split from the cache under `root`, generating and caching it (atomically) when absent."""
    if split not in SPLITS:
        raise UserError(f"digit scenes have splits {', '.join(SPLITS)}, not {split!r}")
    if count < 1:
        raise UserError(f"digit scenes {split}: the image count must be positive, got {count}")
    h, w = image_size
    if h < 16 or w < 16:
        raise UserError(f"digit scenes: image_size must be at least 16x16, got {h}x{w}")
    path = cache_path(root, seed, split, count, image_size)
    if path.is_file():
        arrays = _read_cache(path, count, image_size)
        if arrays is not None:
            log.debug("digit scenes %s loaded from %s", split, path)
            return arrays
    log.info("generating digit scenes %s: %d images of %dx%d (seed %d)", split, count, h, w, seed)
    arrays = generate_split(seed, split, count, image_size)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=arrays.images, labels=arrays.labels, sizes=arrays.sizes,
                        objects=arrays.objects)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise UserError(f"cannot write the digit scenes cache {path}: {exc.strerror or exc}") from None
    log.info("digit scenes %s cached at %s (%.1f MB)", split, path, path.stat().st_size / 1e6)
    return arrays


# --------------------------------------------------------------------------- dataset


class DigitScenes(Dataset):
    """One split as a torch dataset of dicts: "image" `float32 [3, H, W]` (ImageNet-normalised), "label"
    `int64 [H, W]`, "size" `uint8 [H, W]`, "index" int.

    Items are not flipped: a mirrored digit is not a digit. A key may be `(index, augment_seed)` (what
    :func:`nas.data.build_loader` samples); the seed is unused here because scenes are generated at final size.
    """

    name = "digit_scenes"

    def __init__(self, root: str | Path, split: str, count: int, image_size: tuple[int, int], seed: int = 0):
        self.split = split
        self.image_size = tuple(image_size)
        self.seed = seed
        self.arrays = load_or_generate(root, seed, split, count, self.image_size)
        self.path = cache_path(root, seed, split, count, self.image_size)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index = int(key[0] if isinstance(key, tuple) else key)
        if not 0 <= index < len(self):
            raise IndexError(f"digit scenes {self.split} has {len(self)} images, index {index} is out of range")
        return {
            "image": normalize(self.arrays.images[index]),
            "label": torch.from_numpy(self.arrays.labels[index].astype(np.int64)),
            "size": torch.from_numpy(self.arrays.sizes[index].copy()),
            "index": index,
        }

    def label_counts(self) -> np.ndarray:
        """Pixel count per class `[NUM_CLASSES]` (ignore pixels left out)."""
        return np.bincount(self.arrays.labels.ravel(), minlength=256)[:NUM_CLASSES].astype(np.int64)


@register_dataset("digit_scenes")
class DigitScenesSpec(DatasetSpec):
    """`data.name: digit_scenes` (the default): generated offline, cached under `data.root`."""

    def info(self, cfg) -> DatasetInfo:
        return DatasetInfo("digit_scenes", NUM_CLASSES, CLASS_NAMES, PALETTE, SPLITS, SIZE_BUCKETS)

    def version(self, cfg) -> str:
        """A teacher trained on scenes of another generator version is refused."""
        return f"digit_scenes-v{GENERATOR_VERSION}"

    def build(self, cfg, split: str, augment: bool) -> DigitScenes:
        count = cfg.num_train if split == "train" else cfg.num_val
        return DigitScenes(cfg.root, split, count, cfg.image_size, cfg.seed)

    def check_config(self, cfg) -> None:
        for key in ("num_train", "num_val"):
            if getattr(cfg, key) < 1:
                raise UserError(f"data.{key} must be positive, got {getattr(cfg, key)}")

    def check(self, cfg, splits=None) -> DataReport:
        """Generated scenes cannot be broken: counts, the one image size and class pixels of each split (the
        split is generated and cached first when needed)."""
        report = DataReport(self.info(cfg), str(cfg.root))
        for split in splits or SPLITS:
            if split not in SPLITS:
                report.problems.append(f"digit scenes have splits {', '.join(SPLITS)}, not {split!r}")
                continue
            ds = self.build(cfg, split, augment=False)
            report.start(split)
            report.counts[split] = len(ds)
            report.sizes[split][tuple(int(v) for v in cfg.image_size)] = len(ds)
            for label in ds.arrays.labels:
                report.add_label(split, label)
        return report

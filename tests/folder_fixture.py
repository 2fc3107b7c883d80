"""Fabricates a small `data.name: folder` dataset on disk (the `folder_dataset` fixture of tests/conftest.py).

Three classes (background, road, car) with colours; images of two sizes (64x96 and 96x128); masks cycle through
the three kinds the folder dataset reads: 8-bit index PNGs (L mode, with some ignore pixels), RGB PNGs in the
classes' colours, and palette PNGs (P mode, indices read). Each class has its own image colour (plus noise), so a
network can learn the task in a few iterations. ``make_folder_dataset(root)`` returns a :class:`FolderTree` that
knows every expected label map and the config that reads the tree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("background", "road", "car")
COLORS = ((40, 40, 40), (128, 64, 128), (0, 0, 142))
IMAGE_COLORS = ((30, 90, 30), (120, 120, 120), (200, 40, 40))  # what each class looks like in the images
SIZES = ((64, 96), (96, 128))  # H, W
MASK_KINDS = ("index", "rgb", "p")


@dataclass
class FolderTree:
    """A fabricated tree: its root, names per split, and the expected ids (ignore 255) per (split, name)."""

    root: Path
    names: dict[str, list[str]]
    labels: dict[tuple[str, str], np.ndarray]
    kinds: dict[tuple[str, str], str]
    files: dict[tuple[str, str], tuple[Path, Path]]  # (image, mask)
    options: dict[str, object] = field(default_factory=dict)  # data.folder.* keys this layout needs

    def overrides(self, image_size: tuple[int, int] = (64, 128), batch_size: int = 4) -> list[str]:
        """`--set` values that read this tree (for load_config / apply_overrides or the CLI)."""
        out = ["data.name=folder", f"data.root={json.dumps(str(self.root))}",
               f"data.image_size=[{image_size[0]},{image_size[1]}]", f"data.batch_size={batch_size}"]
        out += [f"data.folder.{k}={json.dumps(v)}" for k, v in self.options.items()]
        return out

    def set_flags(self, **kw) -> list[str]:
        """The same as CLI flags: ["--set", "data.name=folder", ...]."""
        return [x for o in self.overrides(**kw) for x in ("--set", o)]

    def data_config(self, **kw):
        """A DataConfig reading this tree (`kw` overrides DataConfig fields)."""
        from nas.config import DataConfig, FolderDataConfig

        base = {"name": "folder", "root": str(self.root), "image_size": (64, 128), "batch_size": 4,
                "folder": FolderDataConfig(**{k: tuple(v) if isinstance(v, list) else v
                                              for k, v in self.options.items()})}
        return DataConfig(**{**base, **kw})

    def image_path(self, split: str, name: str) -> Path:
        return self.files[(split, name)][0]

    def mask_path(self, split: str, name: str) -> Path:
        return self.files[(split, name)][1]


def label_map(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Background, a road band at the bottom, one car rectangle; ids 0..2."""
    lab = np.zeros((h, w), dtype=np.uint8)
    lab[int(h * rng.uniform(0.55, 0.7)):, :] = 1
    ch, cw = int(h * rng.uniform(0.2, 0.35)), int(w * rng.uniform(0.15, 0.3))
    y, x = int(rng.integers(h // 4, h - ch)), int(rng.integers(0, w - cw))
    lab[y:y + ch, x:x + cw] = 2
    return lab


def image_for(lab: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = np.asarray(IMAGE_COLORS, dtype=np.float32)[lab]
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _palette_image(ids: np.ndarray) -> Image.Image:
    im = Image.fromarray(ids, mode="P")
    pal = [0] * 768
    for i, c in enumerate(COLORS):
        pal[3 * i:3 * i + 3] = c
    pal[3 * 255:3 * 256] = (224, 224, 192)  # VOC's border colour for 255
    im.putpalette(pal)
    return im


def write_mask(path: Path, lab: np.ndarray, kind: str, ignore: np.ndarray | None = None,
               reduce_zero_label: bool = False) -> None:
    """Write `lab` (ids 0..2) as `kind`; `ignore` pixels become 255 (index and P masks only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "rgb":
        Image.fromarray(np.asarray(COLORS, dtype=np.uint8)[lab]).save(path)
        return
    ids = lab.astype(np.uint8) + (1 if reduce_zero_label else 0)
    if ignore is not None:
        ids[ignore] = 0 if reduce_zero_label else 255
    if kind == "p":
        _palette_image(ids).save(path)
    else:
        Image.fromarray(ids, mode="L").save(path)


def write_classes(root: Path, colors: bool = True, **extra) -> Path:
    import yaml

    classes = [{"name": n, "color": list(c)} for n, c in zip(CLASSES, COLORS)] if colors else list(CLASSES)
    path = root / "classes.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"classes": classes, **extra} if extra else classes, sort_keys=False))
    return path


def make_folder_dataset(root: Path, n_train: int = 24, n_val: int = 8, seed: int = 0, layout: str = "default",
                        reduce_zero_label: bool = False) -> FolderTree:
    """Write the tree under `root`. `layout`: "default" (images/{split}, masks/{split}, PNG) or "voc"
    (JPEGImages/*.jpg, SegmentationClass/*.png, ImageSets/Segmentation/{split}.txt). With `reduce_zero_label`,
    index and P masks hold id + 1 and 0 for ignore (RGB masks are unaffected)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    write_classes(root)
    names: dict[str, list[str]] = {}
    labels: dict[tuple[str, str], np.ndarray] = {}
    kinds: dict[tuple[str, str], str] = {}
    files: dict[tuple[str, str], tuple[Path, Path]] = {}
    options: dict[str, object] = {}
    if layout == "voc":
        options = {"image_dir": "JPEGImages", "mask_dir": "SegmentationClass", "image_suffix": [".jpg"],
                   "split_file": "ImageSets/Segmentation/{split}.txt"}
    if reduce_zero_label:
        options["reduce_zero_label"] = True
    k = 0
    for split, n in (("train", n_train), ("val", n_val)):
        names[split] = []
        for i in range(n):
            name = f"{split}_{i:03d}"
            h, w = SIZES[k % 2]
            kind = MASK_KINDS[k % 3] if layout != "voc" else "p"
            k += 1
            lab = label_map(h, w, rng)
            ignore = None
            if kind != "rgb":
                ignore = np.zeros((h, w), dtype=bool)
                ignore[:2, :] = True  # a thin ignore border at the top
            if layout == "voc":
                img_path = root / "JPEGImages" / f"{name}.jpg"
                mask_path = root / "SegmentationClass" / f"{name}.png"
            else:
                img_path = root / "images" / split / f"{name}.png"
                mask_path = root / "masks" / split / f"{name}.png"
            img_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image_for(lab, rng)).save(img_path, **({"quality": 95} if layout == "voc" else {}))
            write_mask(mask_path, lab, kind, ignore, reduce_zero_label)
            expected = lab.copy()
            if ignore is not None:
                expected[ignore] = 255
            names[split].append(name)
            labels[(split, name)] = expected
            kinds[(split, name)] = kind
            files[(split, name)] = (img_path, mask_path)
        if layout == "voc":
            lst = root / "ImageSets" / "Segmentation" / f"{split}.txt"
            lst.parent.mkdir(parents=True, exist_ok=True)
            lst.write_text("".join(f"{nm}\n" for nm in names[split]))
    return FolderTree(root, names, labels, kinds, files, options)

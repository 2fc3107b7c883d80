"""`nas predict`: segment PNG/JPG images with a model file; writes a colourised prediction and an overlay each.

Each image is resized (bilinear) to the model's input size, normalised as in training, predicted, and the
class map resized back to the image's size with nearest neighbour (ids must not blend). Colours come from the
model file's palette; the overlay blends the image and the colours half and half.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError

__all__ = ["register", "predict_image", "overlay"]

_OVERLAY_ALPHA = 0.5  # weight of the class colours in the overlay


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="colourised segmentation of PNG/JPG images with a model file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPG files")
    p.add_argument("--checkpoint", required=True, metavar="MODEL.pt", help="a deployable model file (a run's model.pt)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: predict/ beside the checkpoint)")
    p.add_argument("--input", metavar="HxW", help="network input size (default: the model file's)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    p.set_defaults(func=_predict)


def _read_image(path: Path) -> np.ndarray:
    """`uint8 [H, W, 3]` RGB; a missing or unreadable file is a UserError."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {str(exc)[:200] or type(exc).__name__}") from None


def predict_image(model: Any, image: np.ndarray, input_hw: tuple[int, int], device: Any = "cpu") -> np.ndarray:
    """Class ids `int64 [H, W]` of an RGB image `uint8 [H, W, 3]`, predicted at `input_hw`."""
    import torch
    import torch.nn.functional as F

    from nas.data import normalize
    from nas.data.transforms import resize

    small, _ = resize(image, None, input_hw)
    x = normalize(small).unsqueeze(0).to(device)
    with torch.no_grad():
        pred = model(x)["logits"].argmax(1, keepdim=True).float()
    full = F.interpolate(pred, size=image.shape[:2], mode="nearest")
    return full[0, 0].long().cpu().numpy()


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = _OVERLAY_ALPHA) -> np.ndarray:
    """`uint8 [H, W, 3]`: (1 − alpha) · image + alpha · colours."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _palette(info: dict[str, Any]) -> list[list[int]]:
    """The model file's palette, completed with fixed pseudo-random colours where it has too few."""
    palette = [list(c)[:3] for c in info.get("palette") or []]
    k = int(info.get("num_classes", len(palette)))
    rng = np.random.default_rng(0)
    while len(palette) < k:
        palette.append([int(v) for v in rng.integers(0, 256, 3)])
    return palette


def _write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    from nas.io import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    try:
        return atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _predict(args: argparse.Namespace) -> int:
    from nas.commands.export import open_model_file, resolve_input_hw
    from nas.data import colorize
    from nas.device import resolve_device

    paths = [Path(p) for p in args.images]
    for p in paths:  # every image is read once before any output is written: a bad one leaves no partial output
        _read_image(p)
    device = resolve_device(args.device)
    model, info = open_model_file(args.checkpoint)
    model.to(device)
    recorded = list(info.get("input_hw") or [])
    if not args.input and (len(recorded) != 2 or min(recorded) <= 0):
        raise UserError(f"{args.checkpoint} does not record its input size: give --input HxW")
    hw = resolve_input_hw(args.input, (0, 0), info, (0, 0))
    palette = _palette(info)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "predict"
    used: set[str] = set()
    for p in paths:
        image = _read_image(p)
        ids = predict_image(model, image, hw, device)
        colours = colorize(ids, palette)
        stem = p.stem
        n = 2
        while stem in used:
            stem, n = f"{p.stem}_{n}", n + 1
        used.add(stem)
        pred_path = _write_png(out / f"{stem}_pred.png", colours)
        over_path = _write_png(out / f"{stem}_overlay.png", overlay(image, colours))
        print(f"{p}: {pred_path} {over_path}")
    return 0

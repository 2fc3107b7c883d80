"""Segmenting images with a loaded model: read an image, predict its class map, colour and blend it.

An image is resized (bilinear) to the model's input size, normalised as in training, predicted, and the class
map resized back to the image's size with nearest neighbour (ids must not blend).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError

__all__ = ["read_image", "predict_image", "overlay", "model_palette", "write_png"]

_OVERLAY_ALPHA = 0.5  # weight of the class colours in the overlay


def read_image(path: str | Path) -> np.ndarray:
    """`uint8 [H, W, 3]` RGB; a missing or unreadable file is a UserError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
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

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UserError(f"an image must be uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}")
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


def model_palette(info: dict[str, Any]) -> list[list[int]]:
    """A model file's palette, completed with fixed pseudo-random colours where it has too few."""
    palette = [list(c)[:3] for c in info.get("palette") or []]
    k = int(info.get("num_classes", len(palette)))
    rng = np.random.default_rng(0)
    while len(palette) < k:
        palette.append([int(v) for v in rng.integers(0, 256, 3)])
    return palette


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write `uint8 [H, W, 3]` as a PNG, atomically; a failed write is a UserError."""
    from PIL import Image

    from nas.io import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    try:
        return atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None

"""The few vision transforms the datasets need (there is no torchvision here), on numpy arrays.

Images are `uint8 [H, W, 3]`, labels `uint8 [H, W]` until :func:`normalize` turns the image into a float
tensor. Every random choice comes from a passed `numpy.random.Generator`, so a seed fixes the result.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from nas.data.registry import IGNORE_INDEX

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize",
    "denormalize",
    "resize",
    "random_scale",
    "random_crop",
    "random_hflip",
    "pad_to",
    "prepare_pair",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: np.ndarray) -> torch.Tensor:
    """`uint8 [H, W, 3]` → `float32 [3, H, W]`, scaled to [0, 1] then standardised with ImageNet mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)).div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return x.sub_(mean).div_(std)


def denormalize(image: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`normalize`: `float [3, H, W]` → `uint8 [H, W, 3]` (for previews)."""
    x = image.detach().cpu().float()
    x = x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def resize(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize to `size` = (H, W): bilinear for the image, nearest for the label (ids must not blend)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image, label
    out = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if label is not None:
        label = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
    return out, label


def random_scale(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    scale_range: tuple[float, float],
    base: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Rescale both by `base · s`, `s ~ U(scale_range)`, keeping the aspect ratio."""
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must satisfy 0 < low <= high but got {scale_range}.")
    s = base * float(rng.uniform(lo, hi))
    h, w = image.shape[:2]
    size = (max(1, round(h * s)), max(1, round(w * s)))
    out, lab = resize(image, label, size)
    assert lab is not None
    return out, lab


def random_crop(
    image: np.ndarray,
    label: np.ndarray,
    size: tuple[int, int],
    rng: np.random.Generator,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[np.ndarray, np.ndarray]:
    """A random `size` window; a smaller image is first padded (image with its mean colour, label with ignore)."""
    ch, cw = size
    h, w = image.shape[:2]
    if h < ch or w < cw:
        image, label = pad_to(image, label, (ch, cw), ignore_index)
        h, w = image.shape[:2]
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    return image[y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]


def random_hflip(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, p: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror both left-right with probability `p`."""
    if rng.random() < p:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def pad_to(image: np.ndarray, label: np.ndarray, size: tuple[int, int],
           ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom and right up to `size` = (H, W): the image with its mean colour, the label with ignore."""
    h, w = image.shape[:2]
    ph, pw = max(size[0], h), max(size[1], w)
    if (ph, pw) == (h, w):
        return image, label
    fill = image.reshape(-1, image.shape[-1]).mean(0).round().astype(image.dtype)
    padded = np.empty((ph, pw, image.shape[2]), dtype=image.dtype)
    padded[:] = fill
    padded[:h, :w] = image
    lab = np.full((ph, pw), ignore_index, dtype=label.dtype)
    lab[:h, :w] = label
    return padded, lab


def prepare_pair(
    image: np.ndarray,
    label: np.ndarray,
    image_size: tuple[int, int],
    augment: bool,
    seed: int,
    scale_range: tuple[float, float] = (0.75, 1.5),
    flip: bool = True,
    fit: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A full-resolution `uint8` image/label pair → the network's `float32 [3, H, W]` image and `int64 [H, W]`
    label, as every dataset read from files does it.

    `base` is the factor that makes the image just cover `image_size`. Train (`augment`): rescale by
    `base · s`, `s ~ U(scale_range)`, random `image_size` crop (padded with ignore when smaller), random
    horizontal flip (with `flip`), all drawn from `seed`. Otherwise resize by `base`; with `fit` (images of
    several sizes, which must batch together) resize to fit inside `image_size` instead and pad up to it.
    """
    h, w = image.shape[:2]
    th, tw = int(image_size[0]), int(image_size[1])
    if augment:
        rng = np.random.default_rng(seed)
        base = max(th / h, tw / w)
        image, label = random_scale(image, label, rng, scale_range, base)
        image, label = random_crop(image, label, (th, tw), rng, ignore_index)
        if flip:
            image, label = random_hflip(image, label, rng)
    elif fit:
        s = min(th / h, tw / w)
        image, lab = resize(image, label, (min(th, max(1, round(h * s))), min(tw, max(1, round(w * s)))))
        assert lab is not None
        image, label = pad_to(image, lab, (th, tw), ignore_index)
    else:
        base = max(th / h, tw / w)
        image, lab = resize(image, label, (max(1, round(h * base)), max(1, round(w * base))))
        assert lab is not None
        label = lab
    return normalize(image), torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))

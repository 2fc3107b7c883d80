"""`nas predict`: segment PNG/JPG images with a model file; writes a colourised prediction and an overlay each.

The work is :mod:`nas.predict`'s; colours come from the model file's palette and the overlay blends the image
and the colours half and half.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nas.errors import UserError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="colourised segmentation of PNG/JPG images with a model file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPG files")
    p.add_argument("--checkpoint", required=True, metavar="MODEL.pt", help="a deployable model file (a run's model.pt)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: predict/ beside the checkpoint)")
    p.add_argument("--input", metavar="HxW", help="network input size (default: the model file's)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    from nas.data import colorize
    from nas.device import resolve_device
    from nas.exporter.job import resolve_input_hw
    from nas.inference import model_palette, overlay, predict_image, read_image, write_png
    from nas.models import open_model_file

    paths = [Path(p) for p in args.images]
    for p in paths:  # every image is read once before any output is written: a bad one leaves no partial output
        read_image(p)
    device = resolve_device(args.device)
    model, info = open_model_file(args.checkpoint)
    model.to(device)
    recorded = list(info.get("input_hw") or [])
    if not args.input and (len(recorded) != 2 or min(recorded) <= 0):
        raise UserError(f"{args.checkpoint} does not record its input size: give --input HxW")
    hw = resolve_input_hw(args.input, (0, 0), info, (0, 0))
    palette = model_palette(info)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "predict"
    used: set[str] = set()
    for p in paths:
        image = read_image(p)
        ids = predict_image(model, image, hw, device)
        colours = colorize(ids, palette)
        stem = p.stem
        n = 2
        while stem in used:
            stem, n = f"{p.stem}_{n}", n + 1
        used.add(stem)
        pred_path = write_png(out / f"{stem}_pred.png", colours)
        over_path = write_png(out / f"{stem}_overlay.png", overlay(image, colours))
        print(f"{p}: {pred_path} {over_path}")
    return 0

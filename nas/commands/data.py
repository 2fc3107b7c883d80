"""`nas data generate | inspect | preview | check | check-cityscapes`: build, look at and validate the datasets."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.errors import UserError

__all__ = ["register", "PreviewTile", "preview_tiles", "render_preview", "format_report"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from nas.cli import add_config_args

    p = sub.add_parser("data", help="generate, inspect, preview and check datasets (your own: data.name=folder)")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    g = dsub.add_parser("generate", help="generate and cache both digit-scene splits")
    add_config_args(g)
    g.add_argument("--force", action="store_true", help="regenerate even when a cache file exists")
    g.set_defaults(func=_generate)

    i = dsub.add_parser("inspect", help="class pixel frequencies, objects per size bucket, image size")
    add_config_args(i)
    i.add_argument("--split", default="train", help="split to inspect (default train)")
    i.set_defaults(func=_inspect)

    v = dsub.add_parser("preview", help="PNG grid of images with their colourised labels")
    add_config_args(v)
    v.add_argument("--out", metavar="PNG", help="output image (default: runs/<name>/preview_<dataset>_<split>.png)")
    v.add_argument("--n", type=int, default=8, help="number of images (default 8)")
    v.add_argument("--split", default="val", help="split to preview (default val)")
    v.set_defaults(func=_preview)

    k = dsub.add_parser("check", help="check the configured dataset: counts, image sizes, class pixels and every "
                                      "broken image/mask pair (exit 2 when anything is broken)")
    add_config_args(k)
    k.add_argument("--dataset", metavar="NAME", help="dataset name (shortcut for --set data.name=...)")
    k.add_argument("--root", metavar="DIR", help="dataset root (shortcut for --set data.root=...)")
    k.add_argument("--split", action="append", help="check only this split (repeatable; default: all)")
    k.set_defaults(func=_check)

    c = dsub.add_parser("check-cityscapes", help="validate a Cityscapes tree and count images per split/city")
    c.add_argument("root", metavar="ROOT", help="folder holding leftImg8bit/ and gtFine/")
    c.add_argument("--split", choices=("train", "val", "test"), help="check one split (default: all present)")
    c.add_argument("--no-ids", action="store_true", help="skip decoding labels to check their ids (faster)")
    c.set_defaults(func=_check_cityscapes)


def _mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def _generate(args: argparse.Namespace) -> int:
    from nas.cli import config_from_args
    from nas.data import digit_scenes as ds

    cfg = config_from_args(args).data
    if cfg.name != "digit_scenes":
        raise UserError(f"nas data generate builds digit_scenes only; data.name is {cfg.name!r}")
    total_mb, start = 0.0, time.perf_counter()
    for split, count in (("train", cfg.num_train), ("val", cfg.num_val)):
        path = ds.cache_path(cfg.root, cfg.seed, split, count, cfg.image_size)
        cached = path.is_file() and not args.force
        if args.force:
            path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        arrays = ds.load_or_generate(cfg.root, cfg.seed, split, count, cfg.image_size)
        total_mb += _mb(path)
        how = "loaded" if cached else "generated"
        print(f"{split}: {len(arrays)} images {cfg.image_size[0]}x{cfg.image_size[1]}, {len(arrays.objects)} digits, "
              f"{how} in {time.perf_counter() - t0:.1f} s, {_mb(path):.1f} MB  {path}")
    print(f"digit scenes (seed {cfg.seed}) in {Path(cfg.root)}: {total_mb:.1f} MB, {time.perf_counter() - start:.1f} s")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from nas.cli import config_from_args
    from nas.data import build_dataset, class_frequencies, class_weights, dataset_info

    cfg = config_from_args(args).data
    info = dataset_info(cfg)
    ds = build_dataset(cfg, args.split, augment=False)
    freq, weights = class_frequencies(ds), class_weights(ds)
    h, w = ds[0]["image"].shape[-2:]
    print(f"{info.name} {args.split}: {len(ds)} images, {h}x{w} as loaded, {info.num_classes} classes")
    print(f"{'class':<16}{'pixels %':>10}{'weight':>9}")
    for name, f, wt in zip(info.class_names, freq, weights.tolist()):
        print(f"{name:<16}{100 * f:>10.2f}{wt:>9.3f}")
    arrays = getattr(ds, "arrays", None)
    if arrays is not None and info.size_buckets:
        labels = arrays.labels
        print(f"ignore pixels: {100 * float((labels == info.ignore_index).mean()):.2f} % of all pixels")
        heights = arrays.objects[:, 2]
        print(f"digits: {len(arrays.objects)} ({len(arrays.objects) / len(ds):.1f} per image), placed height "
              f"{heights.min()}-{heights.max()} px (median {int(np.median(heights))})")
        pixel_counts = np.bincount(arrays.sizes.ravel(), minlength=len(info.size_buckets) + 1)
        for b, name in enumerate(info.size_buckets, start=1):
            n_obj = int((arrays.objects[:, 3] == b).sum())
            print(f"  {name:<8} objects {n_obj:>6}   labelled pixels {100 * pixel_counts[b] / labels.size:6.2f} %")
    return 0


@dataclass(frozen=True)
class PreviewTile:
    """One preview row item: the image and its colourised label, both `uint8 [H, W, 3]`."""

    index: int
    image: np.ndarray
    label: np.ndarray


def preview_tiles(dataset, n: int, palette) -> list[PreviewTile]:
    """The first `n` items as displayable images (pure data for :func:`render_preview`)."""
    from nas.data import colorize, denormalize

    tiles = []
    for i in range(min(n, len(dataset))):
        item = dataset[i]
        tiles.append(PreviewTile(i, denormalize(item["image"]), colorize(item["label"], palette)))
    return tiles


def render_preview(tiles: list[PreviewTile], class_names, palette, path: str | Path, title: str = "") -> Path:
    """Thin matplotlib (Agg) renderer: image | label pairs, two pairs per row, and a class legend."""
    import io

    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from nas.io import atomic_write_bytes

    pairs = 2 if len(tiles) > 3 else 1
    rows = (len(tiles) + pairs - 1) // pairs
    h, w = tiles[0].image.shape[:2]
    panel_w = 3.2
    fig = Figure(figsize=(panel_w * 2 * pairs, panel_w * h / w * rows + 1.2), layout="constrained")
    axes = fig.subplots(rows, 2 * pairs, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, tile in enumerate(tiles):
        r, c = divmod(k, pairs)
        axes[r, 2 * c].imshow(tile.image, interpolation="nearest")
        axes[r, 2 * c].set_title(f"#{tile.index}", fontsize=8)
        axes[r, 2 * c + 1].imshow(tile.label, interpolation="nearest")
        axes[r, 2 * c + 1].set_title(f"#{tile.index} label", fontsize=8)
    handles = [Patch(color=np.asarray(c) / 255.0, label=n) for n, c in zip(class_names, palette)]
    handles.append(Patch(facecolor="black", label="ignore"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 10), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return atomic_write_bytes(path, buf.getvalue())


def _preview(args: argparse.Namespace) -> int:
    from nas.cli import config_from_args
    from nas.data import build_dataset, dataset_info

    if args.n < 1:
        raise UserError(f"--n must be positive, got {args.n}")
    full = config_from_args(args)
    cfg = full.data
    info = dataset_info(cfg)
    ds = build_dataset(cfg, args.split, augment=False)
    out = Path(args.out) if args.out else Path(full.run.root) / full.run.name / f"preview_{info.name}_{args.split}.png"
    tiles = preview_tiles(ds, args.n, info.palette)
    render_preview(tiles, info.class_names, info.palette, out, title=f"{info.name} {args.split}")
    print(out)
    return 0


def _check(args: argparse.Namespace) -> int:
    import json

    from nas.cli import config_from_args
    from nas.data import check_dataset

    if args.dataset:
        args.overrides = [*args.overrides, f"data.name={json.dumps(args.dataset)}"]
    if args.root:
        args.overrides = [*args.overrides, f"data.root={json.dumps(args.root)}"]
    cfg = config_from_args(args).data
    report = check_dataset(cfg, args.split)
    print(format_report(report))
    if report.problems:
        n = len(report.problems)
        raise UserError(f"{n} problem{'s' if n > 1 else ''} in the {report.info.name} data under {report.root}; "
                        f"first: {report.problems[0]}")
    return 0


def format_report(report) -> str:
    """The text `nas data check` prints: per split the pairs and image sizes, a class-pixel table, then every
    problem (one line each) and a closing OK line when there is none."""
    info = report.info
    lines = [f"{info.name} at {report.root}: {info.num_classes} classes, splits {', '.join(report.counts)}"]
    for split, n in report.counts.items():
        sizes = report.sizes[split]
        shown = ", ".join(f"{h}x{w} ({c})" for (h, w), c in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"{split}: {n} image/mask pairs OK" + (f", sizes {shown}" if shown else ""))
    splits = list(report.counts)
    if splits:
        width = max(12, *(len(name) + 2 for name in info.class_names))
        lines.append(f"{'class':<{width}}" + "".join(f"{s + ' pixels':>16}{'%':>7}" for s in splits))
        totals = {s: int(report.class_pixels[s].sum()) + report.ignore_pixels[s] for s in splits}
        rows = [(name, [int(report.class_pixels[s][k]) for s in splits]) for k, name in enumerate(info.class_names)]
        rows.append(("(ignore)", [report.ignore_pixels[s] for s in splits]))
        for name, values in rows:
            cells = "".join(f"{v:>16,}{100 * v / totals[s] if totals[s] else 0.0:>7.2f}"
                            for s, v in zip(splits, values))
            lines.append(f"{name:<{width}}{cells}")
        empty = [name for k, name in enumerate(info.class_names)
                 if not any(report.class_pixels[s][k] for s in splits)]
        if empty and report.ok:
            lines.append(f"no pixel of: {', '.join(empty)}")
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines.extend(f"  {p}" for p in report.problems)
    else:
        lines.append(f"OK: {sum(report.counts.values())} image/mask pairs in {len(report.counts)} split(s)")
    return "\n".join(lines)


def _check_cityscapes(args: argparse.Namespace) -> int:
    from nas.data.cityscapes import check_root

    summary = check_root(args.root, [args.split] if args.split else None, check_ids=not args.no_ids)
    for split, cities in summary.counts.items():
        print(f"{split}: {sum(cities.values())} images in {len(cities)} cities")
        for city, n in sorted(cities.items()):
            print(f"  {city:<20}{n:>6}")
    sizes = ", ".join(f"{h}x{w}" for h, w in summary.image_sizes)
    print(f"{summary.root}: {summary.total} image/label pairs OK, image size {sizes}")
    return 0

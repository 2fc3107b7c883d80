"""Ship a trained teacher: copy its model file into ``experiments/teachers/`` (floating-point weights stored as
float16, which halves the file and moves val mIoU by less than 0.1 point), re-evaluate the shipped file on the
val split of its dataset and write the model card beside it (command, data version, seed, per-class IoU, size).

    .venv/bin/python experiments/ship_teacher.py runs/teacher_w18/teacher/model.pt \\
        --config experiments/configs/teacher.yaml --name digit_scenes_hrnet_w18s
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="the trained teacher's model.pt")
    p.add_argument("--config", default=str(HERE / "configs" / "teacher.yaml"), help="the config it was trained with")
    p.add_argument("--name", default="digit_scenes_hrnet_w18s", help="file name (without .pt) in experiments/teachers/")
    args = p.parse_args(argv)

    import torch

    from nas.config import load_config
    from nas.data import build_loader, dataset_info, dataset_version
    from nas.evaluate import evaluate
    from nas.io import atomic_write_text, load_checkpoint, save_checkpoint
    from nas.models import load_model

    cfg = load_config(args.config)
    torch.set_num_threads(max(cfg.run.threads, 1))
    state = load_checkpoint(args.model)
    state["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    meta = dict(state.get("meta") or {})
    meta.setdefault("dataset", cfg.data.name)
    meta.setdefault("dataset_version", dataset_version(cfg.data))
    meta["stored_dtype"] = "float16"
    state["meta"] = meta
    out = HERE / "teachers" / f"{args.name}.pt"
    save_checkpoint(out, state)

    model, info = load_model(out)
    ds = dataset_info(cfg.data)
    scores = evaluate(model, build_loader(cfg.data, "val"), ds.num_classes, torch.device("cpu"), ds.size_buckets,
                      ds.ignore_index)
    meta["val_miou"] = scores.miou
    state["meta"] = meta
    save_checkpoint(out, state)  # the card's figure, measured on the shipped weights, travels in the file too
    params = sum(v.numel() for k, v in state["state_dict"].items() if v.is_floating_point()
                 and "running" not in k)
    lines = [
        f"# Teacher `{out.name}`",
        "",
        f"HRNet-like teacher (`{info['hrnet']['preset']}` preset: streams at 1/4–1/32, HRNetV2 head), trained from "
        f"scratch on the embedded digit scenes; the quick start and the distillation benchmarks distil from it.",
        "",
        "| field | value |",
        "|---|---|",
        f"| command | `.venv/bin/nas train --config experiments/configs/teacher.yaml --model teacher`, then "
        f"`.venv/bin/python experiments/ship_teacher.py runs/{cfg.run.name}/teacher/model.pt` |",
        f"| dataset | {cfg.data.name} ({meta['dataset_version']}, seed {cfg.data.seed}, {cfg.data.num_train} train / "
        f"{cfg.data.num_val} val images of {cfg.data.image_size[0]}x{cfg.data.image_size[1]}) |",
        f"| schedule | {cfg.train.epochs} epochs × {cfg.train.iters_per_epoch} iterations, {cfg.train.optimizer} lr "
        f"{cfg.train.lr:g}, batch {cfg.data.batch_size}, seed {cfg.run.seed} |",
        f"| parameters | {params / 1e6:.2f} M (stored as float16: {out.stat().st_size / 1e6:.1f} MB) |",
        f"| input size | {'x'.join(str(v) for v in info['input_hw'])} |",
        f"| val mIoU (shipped weights) | **{100 * scores.miou:.1f}%**, pixel accuracy {100 * scores.pixel_acc:.1f}% |",
        *(f"| val mIoU, {b} digits | {100 * v:.1f}% |" for b, v in scores.size_miou.items() if v == v),
        "",
        "Per-class IoU on the val split:",
        "",
        "| class | IoU |",
        "|---|---|",
        *(f"| {n} | {100 * v:.1f}% |" for n, v in zip(ds.class_names, scores.iou)),
        "",
        "Loading checks the file against the dataset it is used with: the class names and the dataset version must",
        "match (`nas train --teacher`, `nas run`), else a one-line error.",
        f"Written {time.strftime('%Y-%m-%d')} by experiments/ship_teacher.py.",
    ]
    card = atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(json.dumps({"model": str(out), "card": str(card), "val_miou": scores.miou, "params_m": params / 1e6}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

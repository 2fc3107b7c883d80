"""The README's picture of the main job: val scenes, their labels, the teacher's and the student's predictions.

    .venv/bin/python experiments/figure_quickstart.py runs/quickstart/student/model.pt [--out docs/img/quickstart.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("student", help="the student's model.pt")
    p.add_argument("--teacher", default=str(HERE / "teachers" / "digit_scenes_hrnet_w18s.pt"))
    p.add_argument("--config", default=str(HERE / "configs" / "quickstart.yaml"))
    p.add_argument("--images", type=int, default=4, help="val scenes shown")
    p.add_argument("--out", default=str(HERE.parent / "docs" / "img" / "quickstart.png"))
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    import nas
    from nas.data import build_dataset, colorize, dataset_info, denormalize

    cfg = nas.load_config(args.config)
    info = dataset_info(cfg.data)
    ds = build_dataset(cfg.data, "val", augment=False)
    models = {"teacher": nas.load_model(args.teacher), "student": nas.load_model(args.student)}
    cols = ["scene", "labels", *(f"{k} ({m.model_info['meta'].get('val_miou', float('nan')) * 100:.1f}% mIoU)"
                                 for k, m in models.items())]
    fig, axes = plt.subplots(args.images, len(cols), figsize=(2.6 * len(cols), 1.45 * args.images))
    for row in range(args.images):
        item = ds[row * 7]
        image = denormalize(item["image"])
        panels = [image, colorize(item["label"], info.palette)]
        with torch.no_grad():
            for m in models.values():
                panels.append(colorize(m(item["image"][None])["logits"].argmax(1)[0], info.palette))
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(cols[col], fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

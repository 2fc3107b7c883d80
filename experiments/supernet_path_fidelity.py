"""Does a single path of the supernet learn like the network it derives? The condition for any path-based score.

For each of ``--genomes`` random student genomes of the space, the same number of AdamW steps on the same batches:

* ``supernet path``: the supernet with that genome fixed (its one-hot logits), trained through the path only;
* ``standalone``: the derived network of that genome, built on its own (what a search would retrain).

Both are evaluated on the val split. A path that learns far slower than its standalone twin makes every score
taken through the supernet (the evolution's split-B mIoU, the search's derived-network val mIoU) a measure of
something else than the network a user gets.

    .venv/bin/python experiments/supernet_path_fidelity.py --genomes 2 --steps 400     # ~10 min on 2 CPU cores

Rows are appended to ``experiments/results/supernet_path_fidelity.csv`` (a row already there is not run again:
the key is the git commit, genome seed, steps and variant).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

FIELDS = ("commit", "genome_seed", "steps", "variant", "params_m", "final_loss", "val_miou", "seconds")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fit(forward: Any, params: list, cfg: Any, train: Any, steps: int, seed: int) -> float:
    """`steps` AdamW steps (the retrain's rate) of FasterSeg's all-heads loss on seeded batches; the last loss."""
    import torch

    from nas.data import build_loader
    from nas.searcher.common import seg_loss

    ce = torch.nn.CrossEntropyLoss(ignore_index=255)
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    done, loss = 0, torch.zeros(())
    while done < steps:
        for batch in build_loader(cfg.data, "train", shuffle=True, seed=seed + done, drop_last=True, dataset=train):
            if done >= steps:
                break
            loss = seg_loss(ce, forward(batch["image"]), batch["label"], cfg.search.aux_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
    return float(loss.detach())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(HERE / "configs" / "pareto.yaml"))
    p.add_argument("--genomes", type=int, default=2, help="random genomes (seeds 1, 2, ...)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--val-batches", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", default="supernet path,standalone")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    import nas
    from nas.data import build_dataset, build_loader, dataset_info
    from nas.evaluate import evaluate
    from nas.io import atomic_write_csv
    from nas.searcher.common import ArgmaxPath
    from nas.searcher.evolution import applied, genome_space, random_genome
    from search_spaces.builder import build_network
    from search_spaces.derive import derive
    from search_spaces.fasterseg import create_supernet

    torch.set_num_threads(args.threads)
    cfg = nas.load_config(args.config, [])
    info = dataset_info(cfg.data)
    train, val = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "val")
    val_loader = build_loader(cfg.data, "val", shuffle=False, drop_last=False, dataset=val)
    out = HERE / "results" / "supernet_path_fidelity.csv"
    rows: list[dict[str, Any]] = []
    if out.is_file():
        with out.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    commit, cpu = _commit(), torch.device("cpu")
    done = {(r["commit"], int(r["genome_seed"]), int(r["steps"]), r["variant"]) for r in rows}
    for g_seed in range(1, args.genomes + 1):
        for variant in args.variants.split(","):
            if (commit, g_seed, args.steps, variant) in done:
                continue
            torch.manual_seed(0)
            net = create_supernet(cfg.space, info.num_classes)
            genome = random_genome(genome_space(net), np.random.default_rng(g_seed))
            t0 = time.perf_counter()
            with applied(net, genome):
                derived = build_network(derive(net, "student", branches=cfg.space.branches))
                n_params = sum(p.numel() for p in derived.parameters())
                if variant == "supernet path":
                    model: Any = ArgmaxPath(net, "student")
                    params = list(net.weight_parameters())
                else:
                    model, params = derived, list(derived.parameters())
                model.train()
                loss = _fit(model, params, cfg, train, args.steps, seed=g_seed)
                model.eval()
                miou = evaluate(model, val_loader, info.num_classes, cpu, max_batches=args.val_batches).miou
            rows.append({"commit": commit, "genome_seed": g_seed, "steps": args.steps, "variant": variant,
                         "params_m": round(n_params / 1e6, 3), "final_loss": round(loss, 4),
                         "val_miou": round(float(miou), 4), "seconds": round(time.perf_counter() - t0)})
            print(f"genome {g_seed} {variant:<14} loss {loss:.3f}  val mIoU {100 * miou:.1f}%  "
                  f"({rows[-1]['seconds']} s)", flush=True)
            atomic_write_csv(out, [{k: r.get(k) for k in FIELDS} for r in rows])
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

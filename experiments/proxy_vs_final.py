"""Which early signal predicts a network's retrained accuracy? The first epoch's mean training loss against the
final val mIoU, for every network a ``bench_pareto`` run trained.

Reads ``<work>/<network>/<student|baseline>/metrics.csv`` of every row of the Pareto CSV (the retrain logs one row
per epoch: ``loss_seg`` is the mean of that epoch's iterations), prints the Spearman rank correlation of the
first epoch's ``loss_seg`` with the final ``miou``, per group and over all searched and random networks, and writes
``experiments/results/proxy_vs_final.csv``. This is the evidence behind ``search.strategy=halving``: a network that
learns fast in its first few hundred iterations is one that retrains well.

    .venv/bin/python experiments/proxy_vs_final.py --work runs/bench_pareto
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/bench_pareto", help="the bench_pareto run folder")
    p.add_argument("--csv", default=str(HERE / "results" / "bench_pareto.csv"))
    p.add_argument("--out", default=str(HERE / "results" / "proxy_vs_final.csv"))
    args = p.parse_args(argv)

    import pandas as pd

    from nas.io import atomic_write_csv

    bench = pd.read_csv(args.csv).drop_duplicates("name")
    rows = []
    for r in bench.itertuples():
        logs = [Path(args.work) / r.name / sub / "metrics.csv" for sub in ("student", "baseline")]
        log = next((f for f in logs if f.is_file()), None)
        if log is None:
            print(f"{r.name}: no training log under {args.work}, left out")
            continue
        epochs = pd.read_csv(log)
        rows.append({"name": r.name, "group": r.group.split(":")[0],
                     "first_epoch_loss": float(epochs["loss_seg"].iloc[0]), "miou": float(r.miou)})
    if not rows:
        raise SystemExit(f"no training logs under {args.work}: run experiments/bench_pareto.py first")
    df = pd.DataFrame(rows)
    atomic_write_csv(args.out, df.to_dict("records"))
    space = df[df["group"].isin(["searched", "random"])]
    rho = space["first_epoch_loss"].corr(space["miou"], method="spearman")
    print(f"{len(space)} searched and random networks: Spearman rho(first-epoch train loss, final val mIoU) = "
          f"{rho:.2f}")
    ranked = space.sort_values("first_epoch_loss")
    half = len(ranked) // 2
    print(f"  the half that learnt fastest: final mIoU {100 * ranked['miou'].iloc[:half].median():.1f}% median, "
          f"min {100 * ranked['miou'].iloc[:half].min():.1f}%")
    print(f"  the half that learnt slowest: final mIoU {100 * ranked['miou'].iloc[half:].median():.1f}% median, "
          f"min {100 * ranked['miou'].iloc[half:].min():.1f}%")
    print(f"table: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does the search meet its latency target? One search per target, then the derived student measured end to end.

For each ``--targets`` value T (ms, at ``latency.input_hw``) runs ``nas search`` with the given config and
``search.latency_target_ms=T``, then reports the derived student's table latency against T (the goal: at or below
T, within 5%) and the students measured end to end with the table's backend and threads against the table (the
goal: within the error ``nas latency validate`` reports for that table). The students are timed in the same rounds
as the table's calibration networks, so the table is also compared with a correction fitted right then: the gap
between the two is the machine's drift since the table was built, not the table's error.

    .venv/bin/python experiments/bench_latency_targets.py --config experiments/configs/quickstart.yaml \\
        --targets 10,12,15

Searches are cached under ``--work`` (a finished one is reused, an interrupted one resumes); the table goes to
``experiments/results/bench_latency_targets.csv`` (``--tag T``: ``*_T.csv``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def measure_students(archs: list[Any], cfg: Any) -> Any:
    """The students measured end to end as `nas latency validate` measures (the table's backend, threads and
    speed reference), in the same interleaved rounds as the table's calibration networks, so that a *fresh*
    correction is fitted beside the build-time one the search priced with. Returns the validation report."""
    import torch

    from nas.latency.cache import backend_for_table
    from nas.latency.table import LatencyTable
    from nas.latency.validate import calibration_seed, random_networks, validate

    tables = {a.meta["latency_table"] for a in archs}
    if len(tables) != 1:
        raise SystemExit(f"the searches priced their students with different tables: {sorted(tables)}")
    table = LatencyTable.load(tables.pop())
    backend = backend_for_table(cfg.latency, table, torch.device("cpu"))
    calibration = random_networks(archs[0].space, cfg.latency.calibrate, seed=calibration_seed(cfg.latency),
                                  stem_width=archs[0].stem_width, head_width=archs[0].head_width)
    shape = (cfg.latency.batch, 3, *cfg.latency.input_hw)
    return validate(table, archs, backend, shape, progress=False, rounds=cfg.latency.validate_rounds,
                    calibration=calibration if len(calibration) >= 2 else ())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(HERE / "configs" / "quickstart.yaml"))
    p.add_argument("--set", action="append", default=[], help="config override for every search")
    p.add_argument("--targets", default="10,12,15", help="comma-separated latency targets in ms")
    p.add_argument("--work", default="runs/bench_latency_targets")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)

    from nas.config import load_config
    from nas.io import atomic_write_csv
    from nas.searcher import run_search
    from search_spaces.arch import load_architecture

    runs: list[tuple[float, Any, Path, float]] = []
    t_start = time.perf_counter()
    for target in (float(t) for t in args.targets.split(",")):
        name = f"target_{target:g}ms"
        cfg = load_config(args.config, [*args.set, f"run.root={args.work}", f"run.name={name}",
                                        f"search.latency_target_ms={target}"])
        folder = Path(args.work) / name
        t0 = time.perf_counter()
        if not (folder / "student.arch.json").is_file():
            run_search(cfg, resume=(folder / "search.ckpt").is_file())
        runs.append((target, load_architecture(folder / "student.arch.json"), folder, time.perf_counter() - t0))
        print(f"target {target:5.2f} ms: searched in {runs[-1][3]:.0f} s", flush=True)
    report = measure_students([arch for _, arch, _, _ in runs], cfg)
    rows: list[dict[str, Any]] = []
    for (target, arch, folder, search_s), measured_ms, fresh_ms in zip(runs, report.measured_ms,
                                                                        report.predicted_ms):
        table_ms = float(arch.meta["predicted_latency_ms"])
        row = {"target_ms": target, "table_ms": table_ms, "table_vs_target": table_ms / target - 1,
               "measured_ms": measured_ms, "table_vs_measured": table_ms / measured_ms - 1,
               "fresh_correction_ms": fresh_ms, "fresh_vs_measured": fresh_ms / measured_ms - 1,
               "met": table_ms <= 1.05 * target, "search_s": search_s, "arch": str(folder)}
        rows.append(row)
        print(f"target {target:5.2f} ms: table {table_ms:5.2f} ms ({100 * row['table_vs_target']:+.1f}%), "
              f"{'met' if row['met'] else 'MISSED'}; measured {measured_ms:5.2f} ms: table "
              f"{100 * row['table_vs_measured']:+.1f}% (build-time correction), "
              f"{100 * row['fresh_vs_measured']:+.1f}% (fresh correction)", flush=True)
    if report.correction:
        c = report.correction
        print(f"fresh correction on {c.get('n')} calibration networks timed with the students: measured ≈ "
              f"{c['scale']:.3f} · sum + {c['offset_ms']:.2f} ms")
    met = sum(r["met"] for r in rows)
    print(f"{met} of {len(rows)} targets met within 5% ({time.perf_counter() - t_start:.0f} s in all)")
    suffix = f"_{args.tag}" if args.tag else ""
    print(f"table: {atomic_write_csv(HERE / 'results' / f'bench_latency_targets{suffix}.csv', rows)}")
    return 0 if met == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

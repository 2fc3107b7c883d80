"""`nas arch show | draw | import-fasterseg`: inspect, draw and import derived architectures."""

from __future__ import annotations

import argparse
from pathlib import Path

from nas.config import parse_hw
from nas.errors import UserError
from nas.plots import render_trellis, trellis_diagram

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("arch", help="show, draw or import derived architectures")
    asub = p.add_subparsers(dest="arch_command", metavar="ACTION", required=True)

    s = asub.add_parser("show", help="summary, parameters and GMACs of an architecture file")
    s.add_argument("file", help="architecture JSON")
    s.add_argument("--input", default="1024x2048", metavar="HxW", help="input size for the GMACs (default 1024x2048)")
    s.add_argument("--table", metavar="TABLE.json",
                   help="latency table: also print the predicted latency at the table's input size")
    s.set_defaults(func=_show)

    d = asub.add_parser("draw", help="PNG diagram of the trellis path(s)")
    d.add_argument("file", help="architecture JSON")
    d.add_argument("--out", metavar="PNG", help="output image (default: beside FILE, with .png)")
    d.set_defaults(func=_draw)

    i = asub.add_parser("import-fasterseg", help="convert FasterSeg's decoded architecture into our format")
    i.add_argument("ref", metavar="REF.json", help="FasterSeg reference file")
    i.add_argument("out", metavar="OUT.json", help="architecture file to write")
    i.set_defaults(func=_import)


def _show(args: argparse.Namespace) -> int:
    from search_spaces.arch import load_architecture
    from search_spaces.builder import build_network
    from search_spaces.complexity import count_aux_params, count_macs, count_params

    h, w = parse_hw(args.input)
    arch = load_architecture(args.file)
    net = build_network(arch, aux_heads=True)
    for line in arch.summary_lines():
        print(line)
    print(f"params (inference path): {count_params(net) / 1e6:.2f} M ({count_params(net):,})")
    print(f"params (auxiliary heads): {count_aux_params(net) / 1e6:.2f} M ({count_aux_params(net):,})")
    print(f"GMACs @ 1x3x{h}x{w}: {count_macs(net, (h, w)) / 1e9:.2f}")
    if args.table:
        from nas.latency.table import LatencyTable

        table = LatencyTable.load(args.table)
        prov = table.provenance
        th, tw = prov.get("input_hw", (h, w))
        ms = table.predict_architecture(arch, (int(prov.get("batch", 1)), 3, int(th), int(tw)))
        print(f"predicted latency @ {prov.get('batch', 1)}x3x{th}x{tw}: {ms:.2f} ms "
              f"({prov.get('backend')}, {prov.get('device')}, {prov.get('threads')} threads)")
    return 0


def _draw(args: argparse.Namespace) -> int:
    from search_spaces.arch import load_architecture

    arch = load_architecture(args.file)
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".png")
    diagram = trellis_diagram(arch)
    for (name, pts), n_shared in zip(diagram.branches, diagram.shared):
        route = " ".join(f"{diagram.scales[p[1]]}:{p[2]}" for p in pts)
        print(f"branch {name} ({len(pts)} cells, {n_shared} shared): {route}")
    try:
        render_trellis(diagram, out, title=f"{Path(args.file).name}: {arch.kind}")
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"diagram: {out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from nas.io import read_json
    from search_spaces.arch import ArchitectureError, save_architecture
    from search_spaces.fasterseg_import import import_fasterseg

    ref = read_json(args.ref, what="FasterSeg reference file")
    try:
        arch = import_fasterseg(ref)
    except ArchitectureError as exc:
        raise ArchitectureError(f"FasterSeg reference file {args.ref}: {exc}") from None
    try:
        path = save_architecture(arch, args.out)
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"architecture: {path} ({', '.join(b.name for b in arch.branches)} branches, "
          f"{sum(len(b.cells) for b in arch.branches)} cells)")
    return 0

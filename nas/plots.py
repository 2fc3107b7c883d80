"""Plots as pure data plus a thin matplotlib renderer: architecture trellis diagrams, search evolution."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces.arch import Architecture

__all__ = ["TrellisDiagram", "trellis_diagram", "render_trellis", "evolution_data", "render_evolution", "save_figure"]


@dataclass(frozen=True)
class TrellisDiagram:
    """What the trellis drawing shows: per branch the (layer, scale level, op, width) of each cell, and how
    many leading cells it shares with another branch."""

    scales: tuple[int, ...]
    branches: tuple[tuple[str, tuple[tuple[int, int, str, float], ...]], ...]
    shared: tuple[int, ...]


def trellis_diagram(arch: Architecture) -> TrellisDiagram:
    """Pure data for the drawing; sharing follows the builder's plan, so the picture is the network."""
    from search_spaces.builder import plan_network

    plan = plan_network(arch)
    seen: dict[int, int] = {}
    for b in plan.branches:
        for f in b.feats:
            seen[f] = seen.get(f, 0) + 1
    levels = {s: i for i, s in enumerate(arch.space.scales)}
    branches, shared = [], []
    for b, pb in zip(arch.branches, plan.branches):
        pts = tuple((i, levels[c.scale], c.op, c.width) for i, c in enumerate(b.cells))
        branches.append((b.name, pts))
        shared.append(sum(1 for f in pb.feats if seen[f] > 1))
    return TrellisDiagram(tuple(arch.space.scales), tuple(branches), tuple(shared))


_MARKERS = {"skip": "x", "conv": "o", "conv_2x": "s", "zoomed_conv": "^", "zoomed_conv_2x": "D"}


def render_trellis(diagram: TrellisDiagram, path: str | Path, title: str = "") -> Path:
    """Thin matplotlib (Agg) renderer of :func:`trellis_diagram`'s data."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(11, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for bi, ((name, pts), n_shared) in enumerate(zip(diagram.branches, diagram.shared)):
        colour = colours[bi % len(colours)]
        offset = 0.06 * (bi - (len(diagram.branches) - 1) / 2)
        xs = [p[0] for p in pts]
        ys = [p[1] + (offset if i >= n_shared else 0.0) for i, p in enumerate(pts)]
        ax.plot(xs, ys, color=colour, lw=2, label=f"branch {name}", zorder=1)
        if n_shared:
            ax.plot(xs[:n_shared], ys[:n_shared], color="black", lw=12, alpha=0.15, zorder=0,
                    solid_capstyle="round")
        for (x, _, op, width), y in zip(pts, ys):
            marker = _MARKERS.get(op, "o")
            edge = {} if marker == "x" else {"edgecolors": "black", "linewidths": 0.5}
            ax.scatter([x], [y], s=40 + 160 * width, marker=marker, color=colour, zorder=2, **edge)
    ax.set_yticks(range(len(diagram.scales)), [f"1/{s}" for s in diagram.scales])
    ax.set_ylim(len(diagram.scales) - 0.5, -0.5)
    ax.set_xlabel("cell (layer)")
    ax.set_ylabel("scale")
    handles = [Line2D([], [], marker=m, ls="", color="grey", label=op) for op, m in _MARKERS.items()]
    handles.append(Line2D([], [], color="black", lw=8, alpha=0.15, label="shared prefix"))
    first = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.add_artist(first)
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=7,
              title="op (size = width)", title_fontsize=7)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return save_figure(fig, path, dpi=120)


def evolution_data(history: list[dict[str, Any]], ops: tuple[str, ...], widths: tuple[float, ...]) -> dict[str, Any]:
    """Per epoch: mean probability of each op and each width over all cells, mean P(down) over the path choices,
    and the mean P(pixel_shuffle) over the upsampling sites (from the search checkpoint's history)."""
    import numpy as np

    def mean_rows(d: dict[str, list[float]]) -> list[float]:
        return np.asarray(list(d.values())).mean(0).tolist() if d else []

    out: dict[str, Any] = {"epoch": list(range(len(history))), "ops": ops, "widths": widths,
                           "alpha": [], "gamma": [], "beta_down": [], "pixel_shuffle": []}
    for h in history:
        out["alpha"].append(mean_rows(h.get("alpha", {})))
        out["gamma"].append(mean_rows(h.get("gamma", {})))
        beta = mean_rows(h.get("beta", {}))
        out["beta_down"].append(beta[1] if beta else float("nan"))
        ups = list(h.get("upsample", {}).values()) + ([h["final_upsample"]] if h.get("final_upsample") else [])
        out["pixel_shuffle"].append(float(np.mean([u[1] for u in ups])) if ups else float("nan"))
    return out


def render_evolution(data: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Four panels: op probabilities, width probabilities, P(down path), P(pixel_shuffle), over epochs."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 6.5))
    axes = fig.subplots(2, 2)
    ep = data["epoch"]
    for i, op in enumerate(data["ops"]):
        axes[0, 0].plot(ep, [a[i] if a else float("nan") for a in data["alpha"]], marker="o", ms=3, label=op)
    axes[0, 0].set_title("mean α: operator probability")
    for i, w in enumerate(data["widths"]):
        axes[0, 1].plot(ep, [g[i] if g else float("nan") for g in data["gamma"]], marker="o", ms=3,
                        label=f"{w:.2f}")
    axes[0, 1].set_title("mean γ: width probability")
    axes[1, 0].plot(ep, data["beta_down"], marker="o", ms=3, color="tab:purple")
    axes[1, 0].set_title("mean β: P(input from the finer scale)")
    axes[1, 1].plot(ep, data["pixel_shuffle"], marker="o", ms=3, color="tab:red")
    axes[1, 1].set_title("mean P(pixel_shuffle) over upsampling sites")
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    axes[0, 1].legend(fontsize=7, title="width", title_fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=110)


def save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    """Lay out a matplotlib figure and write it to `path` (its folder created); returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path

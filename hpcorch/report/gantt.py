"""The Gantt chart: attempts per node (and per GPU) over time.

:func:`layout` is pure: it gives each attempt a row. A node gets as many CPU
rows ("lanes") as it ran attempts at once, so bars never hide each other, and
one row per GPU index its attempts used; an attempt on GPUs 0 and 1 is drawn
on both GPU rows. :func:`render` draws the layout with matplotlib (imported
here, lazily; the ``report`` extra) on a bare ``Figure`` with the Agg canvas,
so no pyplot global state and no display are involved.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hpcorch.errors import HpcorchError
from hpcorch.report.model import AttemptSpan, Report

__all__ = ["Bar", "Layout", "Row", "layout", "render"]

# Colour-blind-safe (Okabe-Ito) colours: outcome first, then failure class.
COLOURS = {
    "succeeded": "#009E73",
    "running": "#56B4E9",
    "user_error": "#D55E00",
    "out_of_memory": "#CC79A7",
    "timeout": "#E69F00",
    "node_failure": "#505050",
    "preempted": "#0072B2",
    "cancelled": "#999999",
    "infrastructure": "#F0E442",
    "scheduler_connection_lost": "#F0E442",  # infrastructure too: the driver's link
    "unknown": "#B22222",
}
_DARK = frozenset({"node_failure", "preempted"})
_MAX_LABELLED_BARS = 80


def _edge(key: str) -> str:
    """Hatch and edge colour: visible on the fill."""
    return "white" if key in _DARK or key in ("succeeded", "running") else "#333333"


@dataclass(frozen=True, slots=True)
class Row:
    node: str
    label: str
    """Shown on the y axis; empty for a node's extra CPU lanes."""
    gpu: int | None = None


@dataclass(frozen=True, slots=True)
class Bar:
    row: int
    attempt: AttemptSpan

    @property
    def key(self) -> str:
        """Legend key: the outcome, or the failure class of a failed attempt."""
        a = self.attempt
        return (a.failure_class or "unknown") if a.outcome == "failed" else a.outcome


@dataclass(frozen=True, slots=True)
class Layout:
    rows: tuple[Row, ...]
    bars: tuple[Bar, ...]
    end: float


def _natural(text: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def _lanes(attempts: Sequence[AttemptSpan]) -> list[int]:
    """Greedy interval packing: the first lane free at each attempt's start."""
    free_at: list[float] = []
    lanes = []
    for a in attempts:
        lane = next((i for i, t in enumerate(free_at) if t <= a.start), len(free_at))
        if lane == len(free_at):
            free_at.append(a.end)
        else:
            free_at[lane] = a.end
        lanes.append(lane)
    return lanes


def layout(report: Report) -> Layout:
    rows: list[Row] = []
    bars: list[Bar] = []
    for node in sorted({a.node for a in report.attempts}, key=_natural):
        mine = sorted((a for a in report.attempts if a.node == node), key=lambda a: a.start)
        cpu = [a for a in mine if not a.gpus]
        base = len(rows)
        lanes = _lanes(cpu)
        for lane in range(max(lanes, default=-1) + 1):
            rows.append(Row(node=node, label=node if lane == 0 else ""))
        bars.extend(Bar(base + lane, a) for lane, a in zip(lanes, cpu, strict=True))
        gpus = sorted({g for a in mine for g in a.gpus})
        for g in gpus:
            rows.append(Row(node=node, label=f"{node} GPU {g}", gpu=g))
            bars.extend(Bar(len(rows) - 1, a) for a in mine if g in a.gpus)
    end = max((a.end for a in report.attempts), default=0.0)
    return Layout(rows=tuple(rows), bars=tuple(bars), end=max(end, report.makespan_s))


def _ticks(rows: Sequence[Row]) -> tuple[list[float], list[str]]:
    """One label per node's CPU lanes (centred on them) and one per GPU row."""
    ticks: list[float] = []
    labels: list[str] = []
    i = 0
    while i < len(rows):
        j = i + 1
        if rows[i].gpu is None:
            while j < len(rows) and rows[j].node == rows[i].node and rows[j].gpu is None:
                j += 1
        ticks.append((i + j - 1) / 2)
        labels.append(rows[i].label or rows[i].node)
        i = j
    return ticks, labels


def _matplotlib() -> tuple[Any, Any, Any, Any, Any]:
    try:
        from matplotlib import rc_context  # noqa: PLC0415  # optional dependency, guarded
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  # optional dependency, guarded
        from matplotlib.collections import PolyCollection  # noqa: PLC0415  # optional dependency, guarded
        from matplotlib.figure import Figure  # noqa: PLC0415  # optional dependency, guarded
        from matplotlib.patches import Patch  # noqa: PLC0415  # optional dependency, guarded
    except ImportError:
        raise HpcorchError(
            "the Gantt chart needs matplotlib: pip install 'hpcorch[report]'"
        ) from None
    return Figure, FigureCanvasAgg, Patch, PolyCollection, rc_context


def render(report: Report, fmt: Literal["png", "svg"] = "png") -> bytes:
    """The Gantt chart as PNG or SVG bytes."""
    Figure, FigureCanvasAgg, Patch, PolyCollection, rc_context = _matplotlib()
    lay = layout(report)
    n_rows = max(1, len(lay.rows))
    # A third of an inch per row while few; thinner rows past 40 so big runs stay a page or two.
    fig = Figure(figsize=(12, min(2.2 + max(min(0.32 * n_rows, 12.8), 0.1 * n_rows), 40)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # Shade every other node so a node's CPU lanes and GPU rows read as one group.
    nodes = list(dict.fromkeys(r.node for r in lay.rows))
    for i, row in enumerate(lay.rows):
        if nodes.index(row.node) % 2:
            ax.axhspan(i - 0.5, i + 0.5, color="#f2f2f2", zorder=0, linewidth=0)
    labelled = len(lay.bars) <= _MAX_LABELLED_BARS
    span = lay.end or 1.0
    # One barh call per legend key: thousands of attempts draw as a few collections.
    by_key: dict[str, list[Bar]] = {}
    for bar in lay.bars:
        by_key.setdefault(bar.key, []).append(bar)
    thin = span / 2000  # zero-length attempts stay visible
    for key, bars in by_key.items():
        verts = [
            [(a.start, b.row - 0.36), (a.start + max(a.duration, thin), b.row - 0.36),
             (a.start + max(a.duration, thin), b.row + 0.36), (a.start, b.row + 0.36)]
            for b in bars
            for a in (b.attempt,)
        ]  # fmt: skip
        ax.add_collection(
            PolyCollection(
                verts,
                facecolors=COLOURS.get(key, COLOURS["unknown"]),
                edgecolors=_edge(key),
                hatch=None if key in ("succeeded", "running") else "///",
                linewidths=0.6 if labelled else 0.2,
                zorder=2,
            )
        )
    for bar in lay.bars if labelled else ():
        a = bar.attempt
        if a.duration > span * 0.06:
            name = a.task_id if a.n == 1 else f"{a.task_id} #{a.n}"
            ax.text(
                a.start + a.duration / 2,
                bar.row,
                name,
                ha="center",
                va="center",
                fontsize=8,
                clip_on=True,
                # A light box keeps the name readable over a hatched (failed) bar.
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}
                if a.outcome == "failed"
                else None,
                zorder=3,
            )
    ticks, labels = _ticks(lay.rows)
    ax.set_yticks(ticks, labels, fontsize=9)
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(len(lay.rows) - 0.5, -0.5)
    ax.set_xlim(0, span * 1.02)
    ax.set_xlabel("seconds since run start")
    ax.grid(axis="x", color="#dddddd", zorder=1)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(
        f"{report.run_id} — {report.state}, makespan {report.makespan_s:.1f} s", fontsize=11
    )
    seen = {b.key for b in lay.bars}
    keys: list[str] = [k for k in ("succeeded", "running") if k in seen]
    keys += sorted(seen - {"succeeded", "running"})
    handles = [
        Patch(
            facecolor=COLOURS.get(k, COLOURS["unknown"]),
            edgecolor=_edge(k),
            hatch=None if k in ("succeeded", "running") else "///",
            label=k if k in ("succeeded", "running") else f"failed: {k}",
        )
        for k in keys
    ]
    if handles:
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=9,
            frameon=False,
            title="attempt",
        )
    fig.tight_layout()
    out = io.BytesIO()
    if fmt == "svg":
        # Text stays text (searchable, small) and ids are stable from run to run.
        with rc_context({"svg.fonttype": "none", "svg.hashsalt": "hpcorch"}):
            fig.savefig(out, format="svg", metadata={"Date": None})
    else:
        fig.savefig(out, format="png")
    return out.getvalue()

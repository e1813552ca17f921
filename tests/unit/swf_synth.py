"""Synthetic SWF logs of known shapes, for validating the simulator.

Only one Parallel Workloads Archive log (KTH-SP2) is reachable from this
project's machines, so the other shapes the validation needs — a small
machine with accurate estimates, a large one whose users under-estimate (a
third of the jobs overrun, some by more than 2x) and often ask for no time, a
wide-job machine — are generated here, deterministically from a seed, and
written as real SWF files (header and 18 fields) so the same reader parses
them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    name: str
    procs: int
    jobs: int
    load: float  # offered load: sum(procs x run) / (procs x span)
    max_width_log2: int
    overrun_share: float  # jobs running past their request
    overrun_max: float  # ... by up to this factor
    missing_share: float  # jobs asking for no time
    estimate_round_s: float  # users round requests up to this


SHAPES = (
    Shape("small-accurate", 64, 2500, 0.75, 5, 0.0, 1.0, 0.0, 60.0),
    Shape("poor-estimates", 1024, 2500, 0.7, 8, 0.33, 2.5, 0.25, 3600.0),
    Shape("wide-jobs", 4096, 1500, 0.65, 11, 0.05, 1.5, 0.0, 1800.0),
)


def write_swf(shape: Shape, path: Path, seed: int = 1) -> Path:
    rng = random.Random(seed)
    rows: list[tuple[int, float, int, float, float]] = []  # procs, run, req, ...
    for _ in range(shape.jobs):
        procs = min(shape.procs, 2 ** rng.randint(0, shape.max_width_log2))
        run = float(int(rng.lognormvariate(7.5, 1.2)) + 1)
        step = shape.estimate_round_s
        if rng.random() < shape.overrun_share:
            short = run / rng.uniform(1.05, shape.overrun_max)
            req = max(60.0, (short // step) * step)  # rounded down: still short
            run = max(run, req + 1.0)
        else:
            req = float(-(-(run * rng.uniform(1.0, 3.0)) // step) * step)  # rounded up
        if rng.random() < shape.missing_share:
            req = -1.0
        rows.append((procs, run, 0, req, 0.0))
    work = sum(p * r for p, r, *_ in rows)
    span = work / (shape.procs * shape.load)
    mean_gap = span / shape.jobs
    t = 0.0
    lines = [
        "; Version: 2.2",
        f"; Computer: synthetic {shape.name} (tests/unit/swf_synth.py)",
        f"; MaxJobs: {shape.jobs}",
        f"; MaxNodes: {shape.procs}",
        f"; MaxProcs: {shape.procs}",
        ";",
    ]
    for n, (procs, run, _, req, _) in enumerate(rows, 1):
        t += rng.expovariate(1 / mean_gap)
        fields = [n, int(t), -1, int(run), procs, -1, -1, procs, int(req), -1, 1]
        fields += [-1] * 7
        lines.append(" ".join(str(f) for f in fields))
    path.write_text("\n".join(lines) + "\n")
    return path

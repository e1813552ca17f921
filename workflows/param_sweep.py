"""A parameter sweep from Python: one task per point of a grid, then the best point.

A damped, driven oscillator is integrated for every (damping, drive frequency)
pair; each run returns its steady-state amplitude, and ``best`` picks the
resonance. The sweep is declared with the ``@wf.task`` decorator: each call
returns a future at once, and futures passed to another task are its inputs.

Three ways to run it:

    hpcorch run workflows/param_sweep.py --site local   # the CLI builds ``wf``
    python workflows/param_sweep.py                      # runs and prints the best point

or, from a simulation code that keeps computing meanwhile::

    from workflows.param_sweep import best_point, wf
    with wf.submit(site="local") as run:   # returns at once
        ...                                # your own work
        print(run.result(best_point.id))
"""

from __future__ import annotations

import math

import hpcorch

DAMPING = (0.05, 0.1, 0.2)
FREQUENCY = tuple(0.6 + 0.1 * i for i in range(9))  # around the natural frequency 1.0

wf = hpcorch.Workflow("param-sweep")


@wf.task(cpus=1, memory="200MiB", walltime="2m", retries=1)
def amplitude(damping: float, frequency: float, steps: int = 20_000) -> dict[str, float]:
    """Integrate x'' + 2*damping*x' + x = cos(frequency*t); the amplitude after transients."""
    dt = 0.01
    x = v = t = 0.0
    peak = 0.0
    for i in range(steps):
        a = math.cos(frequency * t) - 2 * damping * v - x
        v += a * dt
        x += v * dt
        t += dt
        if i > steps // 2:
            peak = max(peak, abs(x))
    return {"damping": damping, "frequency": frequency, "amplitude": peak}


@wf.task
def best(*points: dict[str, float]) -> dict[str, float]:
    """The point of the sweep with the largest amplitude."""
    return max(points, key=lambda p: p["amplitude"])


points = [amplitude(d, f) for d in DAMPING for f in FREQUENCY]
best_point = best(*points)

if __name__ == "__main__":
    result = wf.run(site="local")
    top = result.result(best_point)
    print(
        f"resonance at frequency {top['frequency']:.2f} (damping {top['damping']}): "
        f"amplitude {top['amplitude']:.2f} over {len(points)} runs (run {result.run_id})"
    )

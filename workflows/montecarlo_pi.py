"""Estimate pi by Monte Carlo: independent sampling tasks and one reduction.

Run it with the CLI (``hpcorch run workflows/montecarlo_pi.py``) or as a
script (``python workflows/montecarlo_pi.py``); the sample counts flow from
the sampling workers to the reducing worker, never through the driver.
"""

from __future__ import annotations

import random

import hpcorch

wf = hpcorch.Workflow("montecarlo-pi")


@wf.task(cpus=1, walltime="1m")
def sample(seed: int, n: int) -> int:
    """How many of ``n`` random points in the unit square fall in the quarter circle."""
    rng = random.Random(seed)
    return sum(1 for _ in range(n) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)


@wf.task
def estimate(n: int, *hits: int) -> float:
    return 4.0 * sum(hits) / (n * len(hits))


N = 200_000
pi = estimate(N, *(sample(seed, N) for seed in range(8)))

if __name__ == "__main__":
    result = wf.run(site="local")
    print(f"pi ~ {result.result(pi):.4f} (run {result.run_id})")

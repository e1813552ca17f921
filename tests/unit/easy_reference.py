"""A deliberately simple EASY backfilling scheduler, written apart from hpcorch.sim.

It shares no code with :mod:`hpcorch.sim.slurm`: plain lists, a full scan per
event, no heaps, no coalescing — slow (quadratic) but easy to check by eye.
The simulator is validated against it on logs of different shapes.

Semantics (Lifka 1995, as in Slurm's backfill without partitions):
- the queue is first-come first-served (submit time, then order in the log);
- at every event time, start queued jobs in order while they fit;
- the first that does not fit gets a reservation at the earliest time enough
  nodes are free by the running jobs' *requested* ends (a job already past its
  requested end is expected to end now), with the nodes left over then ("extra");
- a later job starts now if it fits and either ends (by its request) before
  the reservation, or needs no more than the extra nodes (which it uses up).
- ``kill``: a job runs at most its requested time plus ``over_time_limit``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RefJob:
    submit: float
    nodes: int
    req: float
    run: float


@dataclass(frozen=True)
class RefResult:
    start: list[float]
    end: list[float]
    reservations: list[tuple[int, float]]  # (job index, shadow time) each time a head is set

    def mean_wait(self, jobs: Sequence[RefJob]) -> float:
        return sum(s - j.submit for s, j in zip(self.start, jobs, strict=True)) / len(jobs)


def easy(
    jobs: Sequence[RefJob], nodes: int, *, kill: bool = False, over_time_limit: float = 0.0
) -> RefResult:
    order = sorted(range(len(jobs)), key=lambda k: (jobs[k].submit, k))
    start = [math.nan] * len(jobs)
    end = [math.nan] * len(jobs)
    reservations: list[tuple[int, float]] = []
    queue: list[int] = []
    running: list[int] = []
    free = nodes
    arrivals = 0

    def run_time(k: int) -> float:
        j = jobs[k]
        return min(j.run, j.req + over_time_limit) if kill else j.run

    def begin(k: int, now: float) -> None:
        nonlocal free
        start[k] = now
        end[k] = now + run_time(k)
        free -= jobs[k].nodes
        running.append(k)
        queue.remove(k)

    while arrivals < len(order) or queue or running:
        next_arrival = jobs[order[arrivals]].submit if arrivals < len(order) else math.inf
        next_end = min((end[k] for k in running), default=math.inf)
        now = min(next_arrival, next_end)
        for k in [k for k in running if end[k] <= now]:
            running.remove(k)
            free += jobs[k].nodes
        while arrivals < len(order) and jobs[order[arrivals]].submit <= now:
            queue.append(order[arrivals])
            arrivals += 1
        while queue and jobs[queue[0]].nodes <= free:
            begin(queue[0], now)
        if not queue:
            continue
        head = queue[0]
        expected = sorted((max(start[k] + jobs[k].req, now), jobs[k].nodes) for k in running)
        # the shadow: the first expected end by which enough nodes are free; the extra
        # nodes: all those free then (every job ending at that same time counts)
        shadow, extra = math.inf, 0
        for when, _ in expected:
            freed = free + sum(n for w, n in expected if w <= when)
            if freed >= jobs[head].nodes:
                shadow, extra = when, freed - jobs[head].nodes
                break
        reservations.append((head, shadow))
        for k in list(queue[1:]):
            j = jobs[k]
            if j.nodes > free:
                continue
            if now + j.req <= shadow:
                begin(k, now)
            elif j.nodes <= extra:
                extra -= j.nodes
                begin(k, now)
    return RefResult(start, end, reservations)

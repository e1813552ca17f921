"""Compare a replay with what the trace recorded.

A trace's recorded wait mixes two things: waiting because the machine was
full (contention, what a scheduler simulation models) and waiting while the
job would have fit on idle nodes (user holds, dependencies, outages, a
scheduler cycle, site limits: nothing a work-conserving EASY simulation
reproduces). :func:`recorded_wait_split` separates the two by sweeping the
recorded schedule (start = submit + wait) and charging each waiting second
to "blocked" only when the job did not fit in the nodes idle at that moment.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from hpcorch.sim.replay import ReplayJob

__all__ = ["WaitSplit", "recorded_wait_split"]


@dataclass(frozen=True)
class WaitSplit:
    jobs: int
    mean_wait_s: float
    mean_blocked_wait_s: float  # waiting while too few nodes were idle for the job
    mean_fit_wait_s: float  # waiting while the job would have fit on idle nodes


def recorded_wait_split(jobs: Iterable[ReplayJob], nodes: int) -> WaitSplit:
    """Split the recorded mean wait into blocked and fit-but-waiting parts (upper bound)."""
    events: list[tuple[float, int, int]] = []  # (time, kind, size): 0 end, 1 submit, 2 start
    count = 0
    for job in jobs:
        if job.recorded_wait < 0:
            continue
        count += 1
        start = job.submit + job.recorded_wait
        events.append((job.submit, 1, job.nodes))
        events.append((start, 2, job.nodes))
        events.append((start + job.run_time, 0, job.nodes))
    events.sort()
    waiting: list[int] = []  # sizes of waiting jobs, sorted
    used = 0
    last = events[0][0] if events else 0.0
    total = fit = 0.0
    for time, kind, size in events:
        dt = time - last
        last = time
        if waiting and dt > 0:
            total += len(waiting) * dt
            fit += bisect.bisect_right(waiting, max(0, nodes - used)) * dt
        if kind == 1:
            bisect.insort(waiting, size)
        elif kind == 2:
            del waiting[bisect.bisect_left(waiting, size)]
            used += size
        else:
            used -= size
    if not count:
        return WaitSplit(0, 0.0, 0.0, 0.0)
    return WaitSplit(count, total / count, (total - fit) / count, fit / count)

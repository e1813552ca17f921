"""Free units over time, as Slurm's backfill scheduler sees them (its "node space map").

Conservative backfilling (Mu'alem and Feitelson 2001), which Slurm's
``sched/backfill`` implements: every job the scheduler tests, in priority
order, either starts now or gets a reservation at the earliest time enough
units are free for its whole time limit — so a lower-priority job can only
start in a hole that delays no reservation made before it. Times are rounded
to ``resolution`` seconds (``bf_resolution``), as Slurm's map is.
"""

from __future__ import annotations

import bisect
import math

__all__ = ["TimeMap"]


class TimeMap:
    """A step function: ``free[i]`` units are free during ``[times[i], times[i + 1])``."""

    def __init__(self, now: float, free: int, resolution: float = 1.0) -> None:
        self.now = now
        self.resolution = resolution
        self.times: list[float] = [now]
        self.free: list[int] = [free]

    def round_up(self, t: float) -> float:
        r = self.resolution
        return math.ceil(t / r - 1e-9) * r if r > 0 else t

    def release(self, when: float, units: int) -> None:
        """A running job frees ``units`` at ``when`` (its expected end; the past means now)."""
        when = max(self.now, self.round_up(when))
        i = self._split(when)
        for k in range(i, len(self.free)):
            self.free[k] += units

    def earliest(self, units: int, duration: float, horizon: float = math.inf) -> float:
        """The first time ``units`` are free for ``duration`` seconds (inf: none by horizon)."""
        times, free = self.times, self.free
        length = self.round_up(duration) if duration > 0 else self.resolution
        n = len(times)
        for i in range(n):
            start = times[i]
            if start - self.now > horizon:
                break
            if free[i] < units:
                continue
            end = start + length
            k = i + 1
            while k < n and times[k] < end and free[k] >= units:
                k += 1
            if k == n or times[k] >= end:
                return start
        return math.inf

    def take(self, start: float, duration: float, units: int) -> None:
        """Hold ``units`` from ``start`` for ``duration`` (a start now, or a reservation)."""
        length = self.round_up(duration) if duration > 0 else self.resolution
        i = self._split(start)
        j = self._split(start + length)
        for k in range(i, j):
            self.free[k] -= units

    def _split(self, t: float) -> int:
        """Index of the step starting at ``t``, inserting a breakpoint there if needed."""
        times = self.times
        i = bisect.bisect_left(times, t)
        if i < len(times) and times[i] == t:
            return i
        self.times.insert(i, t)
        self.free.insert(i, self.free[i - 1] if i > 0 else 0)
        return i

"""Nodes shared by jobs, as Slurm's backfill scheduler sees them.

When jobs ask for cores rather than whole nodes, Slurm's ``sched/backfill`` keeps
two views (slurm 22.05, ``backfill.c`` and the select plugin's will-run test):

* the cores of running jobs, freed at each job's expected end (start + time
  limit; one already past it is expected to end now) — exact times;
* a node-space map of *whole nodes* held by the reservations of pending jobs it
  could not start: from the expected start, rounded down to ``bf_resolution``,
  for the time limit (end rounded down too, at least one resolution step). The
  rounding is of the wall clock (epoch seconds), so where the minute boundaries
  fall in a replayed stream depends on the clock time it started (``origin``).

A later job may use a node only where its own ``[start, start + limit]`` overlaps
no reservation of that node. Reservations take nodes, not cores: on a partition
of few wide nodes a single pending one-core job can keep every smaller job
behind it from backfilling there — the effect that makes a pooled-cores model
start jobs too early.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

__all__ = ["NodeSpace", "pick_nodes"]


class NodeSpace:
    """Free cores per node over time, and the nodes' reservations."""

    def __init__(
        self,
        now: float,
        free_now: list[int],
        resolution: float,
        window: float = math.inf,
        origin: float = 0.0,
    ) -> None:
        self.now = now
        self.resolution = resolution
        # Slurm rounds the wall clock (epoch seconds) to bf_resolution: time 0 here is
        # ``origin`` there, so a minute grid falls where Slurm's does.
        self.origin = origin
        self.window = window
        self.free_now = free_now
        n = len(free_now)
        self._rel_t: list[list[float]] = [[] for _ in range(n)]  # release times, sorted
        self._rel_c: list[list[int]] = [[] for _ in range(n)]  # cores at each
        self._cum: list[list[int] | None] = [None] * n  # prefix sums, rebuilt lazily
        self._held_a: list[list[float]] = [[] for _ in range(n)]  # disjoint, sorted
        self._held_b: list[list[float]] = [[] for _ in range(n)]
        self._times: list[float] = []  # every release and reservation end after now

    @property
    def nodes(self) -> int:
        return len(self.free_now)

    def release(self, node: int, when: float, cores: int) -> None:
        """A running job frees ``cores`` of ``node`` at ``when`` (the past means now)."""
        when = max(when, self.now)
        i = bisect.bisect_right(self._rel_t[node], when)
        self._rel_t[node].insert(i, when)
        self._rel_c[node].insert(i, cores)
        self._cum[node] = None
        if when > self.now:
            self._add_time(when)

    def start_now(self, per_node: dict[int, int], duration: float) -> None:
        """A job starts now on these cores of these nodes, for ``duration`` seconds."""
        for node, cores in per_node.items():
            self.free_now[node] -= cores
            self.release(node, self.now + duration, cores)

    def free_at(self, node: int, t: float) -> int:
        cum = self._cum[node]
        if cum is None:
            cum = [0]
            for c in self._rel_c[node]:
                cum.append(cum[-1] + c)
            self._cum[node] = cum
        return self.free_now[node] + cum[bisect.bisect_right(self._rel_t[node], t)]

    def usable(self, node: int, start: float, end: float) -> bool:
        """Whether no reservation holds ``node`` anywhere in ``[start, end]``."""
        i = bisect.bisect_right(self._held_a[node], end) - 1
        return i < 0 or self._held_b[node][i] <= start

    def earliest(self, cores: int, duration: float) -> tuple[float, list[int]]:
        """First time ``cores`` are free on usable nodes for ``duration``, and those
        nodes' free cores then ([] and inf: not within the window)."""
        for t in self._candidates():
            if t - self.now > self.window:
                break
            free = [
                self.free_at(n, t) if self.usable(n, t, t + duration) else 0
                for n in range(self.nodes)
            ]
            if sum(free) >= cores:
                return t, free
        return math.inf, []

    def hold(self, nodes: Iterable[int], start: float, duration: float) -> None:
        """Reserve whole ``nodes`` for a job expected to start at ``start``."""
        res, origin = self.resolution, self.origin
        if res > 0:
            begin = math.floor((start + origin) / res) * res - origin
            end = math.floor((start + duration + origin) / res) * res - origin
        else:
            begin, end = start, start + duration
        end = max(end, begin + res)
        for node in nodes:
            a_list, b_list = self._held_a[node], self._held_b[node]
            i = bisect.bisect_left(b_list, begin)  # first interval ending at/after begin
            j = bisect.bisect_right(a_list, end)  # intervals starting after end stay
            if i < j:  # merge the overlapping ones
                begin_m, end_m = min(begin, a_list[i]), max(end, b_list[j - 1])
                del a_list[i:j], b_list[i:j]
            else:
                begin_m, end_m = begin, end
            a_list.insert(i, begin_m)
            b_list.insert(i, end_m)
        if end > self.now:
            self._add_time(end)

    def _add_time(self, t: float) -> None:
        times = self._times
        i = bisect.bisect_left(times, t)
        if i == len(times) or times[i] != t:
            times.insert(i, t)

    def _candidates(self) -> Iterable[float]:
        yield self.now
        yield from list(self._times)


def pick_nodes(free: list[int], cores: int) -> list[int]:
    """Nodes for a job of ``cores`` cores (free[n]: cores free on node n, 0 if unusable):
    the fullest single node that holds it (best fit), else the emptiest nodes first."""
    fits = [n for n, f in enumerate(free) if f >= cores]
    if fits:
        return [min(fits, key=lambda n: (free[n], n))]
    chosen, got = [], 0
    for n in sorted(range(len(free)), key=lambda n: (-free[n], n)):
        if free[n] <= 0 or got >= cores:
            break
        chosen.append(n)
        got += free[n]
    return chosen

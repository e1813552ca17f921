"""Placement of ready tasks on the nodes of running simulated allocations.

Capacity grows only where a task ended or an allocation started, and time
left only shrinks, so after each event only two things can newly start: ready
tasks on the node that freed up (:meth:`Placing._fill`, oldest first), and tasks
that became ready since the last pass, anywhere (:meth:`Placing._place_new`).
That keeps a placement O(resource classes + allocations), never O(ready tasks x nodes).
"""

from __future__ import annotations

import heapq
import logging
import math

from hpcorch.sim.demand import Demand
from hpcorch.sim.state import (
    LONG,
    OUTCOME_OK,
    OUTCOME_OOM,
    OUTCOME_TIMEOUT,
    OUTCOME_USER,
    READY,
    RUNNING,
    ReadyKey,
)

__all__ = ["Placing"]

logger = logging.getLogger(__name__)


class Placing(Demand):
    """Ready tasks to nodes with room and time for them (``walltime.fits``)."""

    def _set_aside(self, t: int, key: ReadyKey) -> None:
        """No live worker has time for ``t``: it waits for a fresh allocation, in a class
        of its own shape, without holding up shorter tasks. Its old entry goes stale."""
        self.t_long[t] = 1
        long_key = (key[0], key[1], key[2], LONG)
        heap = self.ready.get(long_key)
        if heap is None:
            heap = self.ready[long_key] = []
        heapq.heappush(heap, (-self._cp[t], t))

    def _latest_remaining(self) -> float:
        return -self.by_end[0][0] - self.loop.now if self.by_end else 0.0

    def _fill(self, node: int) -> None:
        """Start ready tasks on ``node``: longest critical path first (the live engine's
        priority), among the classes that fit it."""
        index = self.node_alloc[node]
        if index < 0 or not self.n_ready:
            return
        alloc = self.allocs[index]
        if alloc.pool is None or node not in alloc.pool:
            return
        free = self.free
        classes = self.ready
        t_state = self.t_state
        t_long = self.t_long
        est_of = self.w.estimate
        fits = self.policies.fits
        wconf = self.policies.walltime_config
        remaining = alloc.started + alloc.walltime - self.loop.now
        pop = heapq.heappop
        skip: set[ReadyKey] = set()
        while classes:
            room = free.cpu[node]
            if room <= 0:
                return
            best: ReadyKey | None = None
            best_head = (math.inf, 0)
            for key, heap in classes.items():
                if key[0] <= room and key not in skip and heap[0] < best_head:
                    best_head = heap[0]
                    best = key
            if best is None:
                return
            heap = classes[best]
            cpus, mem, gpus, tag = best
            t = best_head[1]
            if t_state[t] != READY or t_long[t] != (tag == LONG):
                pop(heap)  # stale: started elsewhere or set aside
                if not heap:
                    del classes[best]
                continue
            if (
                (mem and free.mem[node] < mem)
                or (gpus and free.gpu[node] < gpus)
                or (tag >= 0 and node in self.t_exclude.get(tag, ()))
            ):
                skip.add(best)
                continue
            if not fits(est_of[t], remaining, wconf):
                if tag != LONG and not fits(est_of[t], self._latest_remaining(), wconf):
                    pop(heap)
                    if not heap:
                        del classes[best]
                    self._set_aside(t, best)
                else:
                    skip.add(best)
                continue
            chosen = node if self._topo is None else self._topo.place(t, index, self._request(t))
            if chosen < 0:
                skip.add(best)
                continue
            pop(heap)
            if not heap:
                del classes[best]
            self._start(t, chosen, cpus, mem, gpus)

    def _place_new(self) -> None:
        """Place the tasks made ready since the last pass, on any worker with room and time."""
        new = self._new
        if not new:
            return
        self._new = []
        if not self.by_end:
            return
        t_state = self.t_state
        allocs = self.allocs
        est_of = self.w.estimate
        fits = self.policies.fits
        wconf = self.policies.walltime_config
        now = self.loop.now
        failed: set[ReadyKey] = set()  # capacity only shrinks during the pass
        for t in new:
            if t_state[t] != READY or self.t_long[t]:
                continue
            key = self._key_of(t)
            if key in failed:
                continue
            cpus, mem, gpus, tag = key
            exclude = self.t_exclude.get(t, ()) if tag >= 0 else ()
            estimate = est_of[t]
            node = -1
            no_time = False
            for neg_end, index in self.by_end:
                pool = allocs[index].pool
                if pool is None or pool.top < cpus:
                    continue
                if not fits(estimate, -neg_end - now, wconf):
                    no_time = True  # and none of the later-ending ones has time either
                    break
                node = pool.find(cpus, mem, gpus, exclude)
                if node >= 0 and self._topo is not None:
                    node = self._topo.place(t, index, self._request(t))
                if node >= 0:
                    break
            if node >= 0:
                self._start(t, node, cpus, mem, gpus)  # its heap entry goes stale
            elif no_time and tag == -1:
                self._set_aside(t, key)
            else:
                failed.add(key)

    def _start(self, t: int, node: int, cpus: int, mem: int, gpus: int) -> None:
        now = self.loop.now
        self._unready(t, cpus)
        self.n_ready -= 1
        self._running_share += min(1.0, cpus / self._cores)
        alloc = self.allocs[self.node_alloc[node]]
        pool = alloc.pool
        if pool is not None:
            pool.take(node, cpus, mem, gpus)
        else:  # pragma: no cover - placement only uses nodes of taking allocations
            self.free.cpu[node] -= cpus
        alloc.running += 1
        alloc.idle_since = -1.0
        tasks = self.node_tasks.get(node)
        if tasks is None:
            tasks = self.node_tasks[node] = set()
        tasks.add(t)
        self.t_state[t] = RUNNING
        self.t_node[t] = node
        self.t_start[t] = now
        self.task_wait_s += now - self.t_ready_at[t]
        n = self.t_attempt[t] + 1
        self.t_attempt[t] = n
        self.running += 1
        duration = self.w.duration[t]
        outcome = OUTCOME_OK
        rng = self._rng.random
        res = self.t_res.get(t)
        limit = res.walltime_s if res is not None else self.w.walltime[t]
        if self.config.user_error_rate and rng() < self.config.user_error_rate:
            outcome = OUTCOME_USER
            duration *= rng()
        elif self.config.oom_rate and res is None and rng() < self.config.oom_rate:
            outcome = OUTCOME_OOM
            duration *= 0.5
        if limit and duration > limit:
            outcome = OUTCOME_TIMEOUT
            duration = limit
        self.t_outcome[t] = outcome
        self.loop.at(now + duration, self._k_end, (t, n))

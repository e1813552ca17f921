"""The ready queue of the simulated driver and its demand summary, kept in O(1) per change.

Ready tasks wait in one heap per resource class, longest critical path first;
the running sums (shares, node-seconds, extremes) and the tasks about to be
ready (:func:`hpcorch.policies.scale.about_ready`) are what the scaling policy
reads as the pool's demand.
"""

from __future__ import annotations

import heapq
import logging

from hpcorch.sim.state import (
    READY,
    WAITING,
    SimState,
)

__all__ = ["Demand"]

logger = logging.getLogger(__name__)


class Demand(SimState):
    """Tasks made ready, set aside and counted as demand."""

    def _make_ready(self, t: int) -> None:
        if self.t_soon[t]:
            self.t_soon[t] = 0
            self._soon_n -= 1
            share = min(1.0, self._key_of(t)[0] / self._cores)
            self._soon_share -= share
            self._soon_node_s -= share * self.w.estimate[t]
        if self.t_attempt[t] == 0 and self.w.estimate[t] <= self._lookahead_s:
            w = self.w
            for c in w.child_idx[w.child_ptr[t] : w.child_ptr[t + 1]]:
                self._unblock(c)
        self.t_state[t] = READY
        self.t_ready_at[t] = self.loop.now
        key = self._key_of(t)
        self.t_long[t] = 0
        heap = self.ready.get(key)
        if heap is None:
            heap = self.ready[key] = []
        heapq.heappush(heap, (-self._cp[t], t))
        self.n_ready += 1
        self._new.append(t)
        share = min(1.0, key[0] / self._cores)
        est = self.w.estimate[t]
        self._ready_share += share
        self._ready_node_s += share * est
        self._widen(est, share)

    def _widen(self, est: float, share: float) -> None:
        """The queued work's extremes now include a task of ``est`` seconds and ``share``."""
        self._ready_longest = max(self._ready_longest, est)
        self._ready_shortest = min(self._ready_shortest, est)
        self._ready_widest = max(self._ready_widest, share)

    def _unblock(self, c: int) -> None:
        """One parent of ``c`` is out of the way: ready and short, or done."""
        left = self.t_block[c] - 1
        self.t_block[c] = left
        if left == 0 and self.t_state[c] == WAITING and self.t_pending[c] > 0:
            self.t_soon[c] = 1
            self._soon_n += 1
            share = min(1.0, self._key_of(c)[0] / self._cores)
            est = self.w.estimate[c]
            self._soon_share += share
            self._soon_node_s += share * est
            self._widen(est, share)

    def _unready(self, t: int, cpus: int) -> None:
        share = min(1.0, cpus / self._cores)
        self._ready_share -= share
        self._ready_node_s -= share * self.w.estimate[t]

"""The workflow side of a simulation: hpcorch's driver loop on simulated allocations.

:class:`WorkflowSim` does what the live engine does, through the same policy
calls (:class:`~hpcorch.policies.bundle.Policies`):

- every ``poll_s`` (the monitor's interval) it summarises the demand in O(1)
  (:mod:`hpcorch.sim.demand`) and asks the scaling policy
  (:mod:`hpcorch.sim.allocations`) which allocations to submit (count, nodes,
  walltime) and which to release; each submission is an ``sbatch`` on the
  site ``region.choose_site`` picks, and it waits in the simulated Slurm queue
  behind everyone else's jobs;
- ready tasks, longest critical path first, are placed on the nodes of
  running allocations (best fit, :class:`~hpcorch.sim.slots.SlotPool`;
  :mod:`hpcorch.sim.placing`), and only on workers whose time left fits the
  task's estimate (``walltime.fits``); a worker winding down takes no new
  task and its allocation is released once idle;
- a failed attempt (an injected user error or OOM, a task walltime, a lost
  node, an allocation that ended under it) becomes :class:`Evidence`, is
  classified by ``failures.diagnose`` and handed, through the retry ledger the
  live engine keeps too (:class:`~hpcorch.policies.ledger.RetryLedger`), to
  ``retry.decide_retry``, whose decision (retry with more memory or time,
  elsewhere, after a delay, or give up) :mod:`hpcorch.sim.attempts` carries out.

Its state (:class:`~hpcorch.sim.state.SimState`) and each of those parts is a
module of its own, each class built on the one before.

Per-task state lives in arrays; per-attempt records are appended to arrays
and turned into journal rows only on request (:mod:`hpcorch.sim.output`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hpcorch.policies.bundle import Policies
from hpcorch.sim.allocations import Allocations
from hpcorch.sim.engine import EventLoop
from hpcorch.sim.state import DriverConfig, Region
from hpcorch.sim.workload import SimWorkload

__all__ = ["WorkflowSim"]


class WorkflowSim(Allocations):
    """Run one workflow on simulated regions. Call :meth:`run`, then read the results."""

    def __init__(
        self,
        loop: EventLoop,
        workload: SimWorkload,
        regions: Sequence[Region],
        config: DriverConfig | None = None,
        policies: Policies | None = None,
    ) -> None:
        super().__init__(loop, workload, regions, config, policies)
        self._k_end = loop.register(self._on_task_end)
        self._k_tick = loop.register(self._on_tick)
        self._k_ready = loop.register(self._on_retry_ready)

    # -- running ----------------------------------------------------------------

    def start(self) -> None:
        """Submit the workflow at the loop's current time; the loop's ``run`` plays it."""
        self.start_time = self.loop.now
        for t in range(len(self.w)):
            if self.t_pending[t] == 0:
                self._make_ready(t)
        self.loop.at(self.loop.now, self._k_tick)

    def run(self, until: float = math.inf) -> None:
        """:meth:`start`, then run the loop to the end (or ``until``)."""
        self.start()
        self.loop.run(until)

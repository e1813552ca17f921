"""A discrete-event simulator that runs hpcorch's policies against a simulated Slurm.

The live engine and the simulator call the same policy code; only the clock
(:class:`~hpcorch.sim.engine.EventLoop`) and the cluster
(:class:`~hpcorch.sim.slurm.SimSlurm`: EASY backfilling, node failures,
preemption) differ.

- :mod:`hpcorch.sim.replay` replays job traces (SWF, Philly) to validate the
  cluster model (:mod:`hpcorch.sim.validate` against the recorded waits);
- :mod:`hpcorch.sim.driver` runs a workflow (:mod:`hpcorch.sim.workload`)
  through the scale, walltime, region and retry policies
  (:class:`hpcorch.policies.bundle.Policies`, as the live engine), and
  :mod:`hpcorch.sim.output` writes the same journal as a live run;
- :mod:`hpcorch.sim.openb` replays Alibaba GPU pods through the placement policy;
- :func:`simulate_trace` is what ``hpcorch simulate`` runs.
"""

from __future__ import annotations

from hpcorch.sim.driver import WorkflowSim
from hpcorch.sim.engine import EventLoop
from hpcorch.sim.replay import ReplayJob, ReplayResult, replay, replay_philly, replay_swf
from hpcorch.sim.runs import simulate_trace, simulate_workflow
from hpcorch.sim.slurm import JobListener, SimJobState, SimSlurm
from hpcorch.sim.state import DriverConfig, Region
from hpcorch.sim.workload import SimWorkload, from_spec, from_wftasks, synthetic

__all__ = [
    "DriverConfig",
    "EventLoop",
    "JobListener",
    "Region",
    "ReplayJob",
    "ReplayResult",
    "SimJobState",
    "SimSlurm",
    "SimWorkload",
    "WorkflowSim",
    "from_spec",
    "from_wftasks",
    "replay",
    "replay_philly",
    "replay_swf",
    "simulate_trace",
    "simulate_workflow",
    "synthetic",
]

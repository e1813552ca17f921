"""A discrete-event simulator that runs hpcorch's policies against a simulated Slurm.

The live engine and the simulator call the same policy code; only the clock
(:class:`~hpcorch.sim.engine.EventLoop`) and the cluster
(:class:`~hpcorch.sim.slurm.SimSlurm`) differ. :mod:`hpcorch.sim.replay`
replays job traces (SWF, Philly) to validate the cluster model;
:mod:`hpcorch.sim.driver` runs a workflow through the policies on it.
"""

from __future__ import annotations

from hpcorch.sim.engine import EventLoop
from hpcorch.sim.replay import ReplayResult, replay, replay_philly, replay_swf
from hpcorch.sim.slurm import JobListener, JobState, SimSlurm

__all__ = [
    "EventLoop",
    "JobListener",
    "JobState",
    "ReplayResult",
    "SimSlurm",
    "replay",
    "replay_philly",
    "replay_swf",
]

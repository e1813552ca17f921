"""Placement of tasks on node topology: requests, free state, the policy, slots.

Pure parts (no I/O): :class:`Request`, :class:`NodeState`, :func:`choose_slot`,
:func:`place` / :class:`Packer` (the policy), :func:`check_feasible`. The
worker side (:mod:`hpcorch.placement.slots`, :mod:`hpcorch.placement.plugin`)
hands a node's cores and GPUs to the tasks running on it.
"""

from hpcorch.placement.choose import choose_cores, choose_gpus, choose_share, choose_slot
from hpcorch.placement.packer import POLICIES, Packer, Policy, TaskClass, place, workload_classes
from hpcorch.placement.request import GPU_MILLI, NodeDemand, Placement, RankSlot, Request, Slot
from hpcorch.placement.state import NodeState

__all__ = [
    "GPU_MILLI",
    "POLICIES",
    "NodeDemand",
    "NodeState",
    "Packer",
    "Placement",
    "Policy",
    "RankSlot",
    "Request",
    "Slot",
    "TaskClass",
    "choose_cores",
    "choose_gpus",
    "choose_share",
    "choose_slot",
    "place",
    "workload_classes",
]

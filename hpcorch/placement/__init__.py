"""Placement of tasks on node topology: requests, free state, the policy, slots.

Pure parts (no I/O): :class:`Request`, :class:`NodeCapacity`, :func:`choose_slot`,
:func:`place` / :class:`Packer` (the policy), :func:`check_feasible`. The
worker side (:mod:`hpcorch.placement.slots`, :mod:`hpcorch.placement.plugin`)
hands a node's cores and GPUs to the tasks running on it; the plugin module
imports distributed, so it is not imported here.
"""

from hpcorch.placement.choose import choose_cores, choose_gpus, choose_share, choose_slot
from hpcorch.placement.feasibility import check_feasible, feasible_partitions
from hpcorch.placement.packer import POLICIES, Packer, Policy, TaskClass, place, workload_classes
from hpcorch.placement.request import GPU_MILLI, NodeDemand, Placement, RankSlot, Request, Slot
from hpcorch.placement.slots import SlotAllocator
from hpcorch.placement.state import NodeCapacity

__all__ = [
    "GPU_MILLI",
    "POLICIES",
    "NodeCapacity",
    "NodeDemand",
    "Packer",
    "Placement",
    "Policy",
    "RankSlot",
    "Request",
    "Slot",
    "SlotAllocator",
    "TaskClass",
    "check_feasible",
    "choose_cores",
    "choose_gpus",
    "choose_share",
    "choose_slot",
    "feasible_partitions",
    "place",
    "workload_classes",
]

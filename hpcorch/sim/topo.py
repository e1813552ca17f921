"""Topology placement for the simulated driver: hpcorch.placement's Packer per allocation.

Optional (``DriverConfig.placement``): the fast path places on core/memory/GPU
counts (:class:`~hpcorch.sim.slots.SlotPool`); this one lets the live
placement policy pick the node, the cores and the GPUs inside each running
allocation, so the journal records them as a live run's does. It costs a
Packer call per task, so it suits workflows of thousands of tasks, not millions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hpcorch.placement import POLICIES, NodeCapacity, Packer, Placement, Request, workload_classes
from hpcorch.placement.packer import Policy
from hpcorch.topology import GpuInfo, NodeTopology

__all__ = ["TopologyPlacer", "node_topology"]


def node_topology(cores: int, memory: int, gpus: int) -> NodeTopology:
    """A node of that shape: two sockets when the cores split evenly, GPUs spread over them."""
    sockets = 2 if cores > 1 and cores % 2 == 0 else 1
    gpu_info = tuple(GpuInfo(i, i * sockets // max(1, gpus)) for i in range(gpus))
    return NodeTopology(sockets, cores // sockets, memory or 1 << 50, gpu_info)


class TopologyPlacer:
    """One :class:`Packer` per running allocation, all with the workflow's task classes."""

    def __init__(self, policy: str, requests: Iterable[Request], seed: int = 0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown placement policy {policy!r} (known: {', '.join(POLICIES)})")
        self.policy: Policy = policy
        self.seed = seed
        self._classes = workload_classes(requests)
        self._packers: dict[int, Packer] = {}
        self._gid: dict[str, int] = {}  # node name -> the driver's node id
        self._placed: dict[int, tuple[int, Placement]] = {}  # task -> (allocation, placement)

    def open(self, alloc: int, nodes: Sequence[tuple[str, int]], topology: NodeTopology) -> None:
        """An allocation started on ``nodes`` (name, node id)."""
        for name, gid in nodes:
            self._gid[name] = gid
        states = [NodeCapacity.idle(name, topology) for name, _ in nodes]
        self._packers[alloc] = Packer(states, self.policy, workload=self._classes, seed=self.seed)

    def close(self, alloc: int) -> None:
        self._packers.pop(alloc, None)

    def place(self, task: int, alloc: int, request: Request) -> int:
        """Place the task in the allocation; the node id the policy chose, or -1."""
        packer = self._packers.get(alloc)
        placement = packer.place(request) if packer is not None else None
        if placement is None:
            return -1
        self._placed[task] = (alloc, placement)
        return self._gid[placement.slots[0].node]

    def release(self, task: int) -> tuple[str, str] | None:
        """Free the task's slot; its cores and GPUs as the journal stores them ("0,1", "2")."""
        entry = self._placed.pop(task, None)
        if entry is None:
            return None
        alloc, placement = entry
        packer = self._packers.get(alloc)
        if packer is not None:
            packer.release(placement)
        slot = placement.slots[0]
        return ",".join(map(str, slot.cores)), ",".join(map(str, slot.gpus))

"""The free part of one node: which cores, how much memory, how much of each GPU."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hpcorch.placement.request import GPU_MILLI, NodeDemand, Slot
from hpcorch.topology import NodeTopology

__all__ = ["NodeCapacity"]


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """Free cores (ids), free memory (bytes) and free share of each GPU (milli)."""

    name: str
    topology: NodeTopology
    free_cores: frozenset[int]
    free_memory: int
    gpu_free: tuple[int, ...]

    @classmethod
    def idle(cls, name: str, topology: NodeTopology) -> NodeCapacity:
        return cls(
            name=name,
            topology=topology,
            free_cores=frozenset(range(topology.cores)),
            free_memory=topology.memory,
            gpu_free=(GPU_MILLI,) * topology.gpu_count,
        )

    @property
    def whole_free_gpus(self) -> tuple[int, ...]:
        return tuple(i for i, free in enumerate(self.gpu_free) if free == GPU_MILLI)

    def fits(self, demand: NodeDemand) -> bool:
        """Whether the demand fits the free resources (ignoring how well)."""
        if len(self.free_cores) < demand.cpus or self.free_memory < demand.memory:
            return False
        if demand.shared:
            return any(free >= demand.gpu_milli for free in self.gpu_free)
        return len(self.whole_free_gpus) >= demand.gpus

    def take(self, slot: Slot) -> NodeCapacity:
        """The state once ``slot`` is in use. Raises ValueError on any overlap."""
        cores = frozenset(slot.cores)
        if not cores <= self.free_cores:
            raise ValueError(f"{self.name}: cores {sorted(cores - self.free_cores)} are in use")
        if slot.memory > self.free_memory:
            raise ValueError(f"{self.name}: {slot.memory} bytes asked, {self.free_memory} free")
        gpu_free = list(self.gpu_free)
        for gpu in slot.gpus:
            if gpu_free[gpu] < slot.gpu_milli:
                raise ValueError(f"{self.name}: GPU {gpu} has {gpu_free[gpu]} milli free")
            gpu_free[gpu] -= slot.gpu_milli
        return replace(
            self,
            free_cores=self.free_cores - cores,
            free_memory=self.free_memory - slot.memory,
            gpu_free=tuple(gpu_free),
        )

    def give(self, slot: Slot) -> NodeCapacity:
        """The state once ``slot`` is released. Raises ValueError if it was not taken."""
        cores = frozenset(slot.cores)
        if cores & self.free_cores:
            raise ValueError(f"{self.name}: cores {sorted(cores & self.free_cores)} are not in use")
        gpu_free = list(self.gpu_free)
        for gpu in slot.gpus:
            if gpu_free[gpu] + slot.gpu_milli > GPU_MILLI:
                raise ValueError(f"{self.name}: GPU {gpu} was not held")
            gpu_free[gpu] += slot.gpu_milli
        return replace(
            self,
            free_cores=self.free_cores | cores,
            free_memory=min(self.topology.memory, self.free_memory + slot.memory),
            gpu_free=tuple(gpu_free),
        )

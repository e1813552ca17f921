"""Free cores, memory and GPUs of the nodes a simulated run holds, for fast best-fit.

The simulator's hot path places up to millions of tasks, so per-node free
counts live in shared arrays (:class:`NodeFree`) and each :class:`SlotPool`
keeps its member nodes in buckets by free cores (a dict used as an ordered
set per count): a best-fit lookup walks at most ``cores_per_node`` buckets,
and take/release move one node between two buckets. The rule is the
``best_fit`` policy of :mod:`hpcorch.placement` (the node left with the
fewest free cores), without the per-core-id bookkeeping the simulation does
not need; the full :class:`~hpcorch.placement.Packer` runs the openb replay.
"""

from __future__ import annotations

from array import array
from collections.abc import Container

__all__ = ["NodeFree", "SlotPool"]


class NodeFree:
    """Free cores, memory and GPUs of every node, by global node id."""

    __slots__ = ("cpu", "gpu", "mem")

    def __init__(self, nodes: int) -> None:
        self.cpu = array("q", bytes(8 * nodes))
        self.mem = array("q", bytes(8 * nodes))
        self.gpu = array("q", bytes(8 * nodes))

    def reset(self, node: int, cores: int, memory: int, gpus: int) -> None:
        self.cpu[node] = cores
        self.mem[node] = memory
        self.gpu[node] = gpus


class SlotPool:
    """A set of usable nodes (each node in at most one pool), bucketed by free cores."""

    __slots__ = ("_buckets", "_member", "cores", "free", "free_total", "top")

    def __init__(self, free: NodeFree, cores: int) -> None:
        self.free = free
        self.cores = cores
        self._buckets: list[dict[int, None]] = [{} for _ in range(cores + 1)]
        self._member: set[int] = set()
        self.free_total = 0  # free cores over member nodes
        self.top = 0  # most free cores on one member node: no task above it fits

    def __contains__(self, node: object) -> bool:
        return node in self._member

    def __len__(self) -> int:
        return len(self._member)

    def add(self, node: int) -> None:
        """Make the node usable here, with its current free counts."""
        if node not in self._member:
            self._member.add(node)
            cpu = self.free.cpu[node]
            self._buckets[cpu][node] = None
            self.free_total += cpu
            self.top = max(self.top, cpu)

    def remove(self, node: int) -> None:
        """No new task goes to the node from this pool."""
        if node in self._member:
            self._member.discard(node)
            cpu = self.free.cpu[node]
            del self._buckets[cpu][node]
            self.free_total -= cpu
            self._lower_top(cpu)

    def find(self, cpus: int, memory: int = 0, gpus: int = 0, exclude: Container[int] = ()) -> int:
        """The member node with the fewest free cores that fits, or -1."""
        if cpus > self.top:
            return -1
        buckets = self._buckets
        if not memory and not gpus and not exclude:
            for c in range(cpus, self.top + 1):
                bucket = buckets[c]
                if bucket:
                    return next(iter(bucket))
            return -1  # pragma: no cover - top has a member
        free_mem = self.free.mem
        free_gpu = self.free.gpu
        for c in range(cpus, self.top + 1):
            for node in buckets[c]:
                if free_mem[node] >= memory and free_gpu[node] >= gpus and node not in exclude:
                    return node
        return -1

    def take(self, node: int, cpus: int, memory: int, gpus: int) -> None:
        free = self.free
        before = free.cpu[node]
        free.cpu[node] = before - cpus
        free.mem[node] -= memory
        free.gpu[node] -= gpus
        if node in self._member:
            buckets = self._buckets
            del buckets[before][node]
            buckets[before - cpus][node] = None
            self.free_total -= cpus
            self._lower_top(before)

    def release(self, node: int, cpus: int, memory: int, gpus: int) -> None:
        free = self.free
        before = free.cpu[node]
        free.cpu[node] = before + cpus
        free.mem[node] += memory
        free.gpu[node] += gpus
        if node in self._member:
            buckets = self._buckets
            del buckets[before][node]
            buckets[before + cpus][node] = None
            self.free_total += cpus
            self.top = max(self.top, before + cpus)

    def _lower_top(self, emptied: int) -> None:
        """A node left bucket ``emptied``: if it was the top one and is now empty, go down."""
        if emptied == self.top:
            buckets = self._buckets
            top = emptied
            while top > 0 and not buckets[top]:
                top -= 1
            self.top = top

"""What a task asks of the nodes (:class:`Request`) and what it was given (:class:`Slot`).

A request is ``ranks`` processes of ``cpus`` cores and ``gpus`` GPUs each,
laid out ``ranks_per_node`` to a node, plus ``memory`` bytes per node. A plain
task is one rank. ``gpus`` below 1 is a share of one GPU (co-location, opt-in
through ``share_gpus``); shares are counted in thousandths ("milli-GPUs") so
that sums are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpcorch.errors import ResourceError

if TYPE_CHECKING:
    from hpcorch.spec import TaskSpec

__all__ = ["GPU_MILLI", "NodeDemand", "Placement", "RankSlot", "Request", "Slot"]

GPU_MILLI = 1000


@dataclass(frozen=True, slots=True)
class NodeDemand:
    """The part of a request that lands on one node."""

    ranks: int
    cpus_per_rank: int
    gpus_per_rank: int  # whole GPUs
    gpu_milli: int  # share of one GPU when below GPU_MILLI (one rank only)
    memory: int

    @property
    def cpus(self) -> int:
        return self.ranks * self.cpus_per_rank

    @property
    def gpus(self) -> int:
        """Whole GPUs taken (a share counts as 0 here)."""
        return self.ranks * self.gpus_per_rank

    @property
    def shared(self) -> bool:
        return 0 < self.gpu_milli < GPU_MILLI


@dataclass(frozen=True, slots=True)
class Request:
    """Resources one task asks for. Validated on construction; errors say what to change."""

    cpus: int = 1
    memory: int = 0
    gpus: float = 0.0
    ranks: int = 1
    ranks_per_node: int | None = None
    nodes: int | None = None
    share_gpus: bool = False
    id: str = ""

    def __post_init__(self) -> None:
        who = f"task {self.id!r}: " if self.id else ""
        if self.cpus < 0 or self.memory < 0 or self.gpus < 0:
            raise ResourceError(f"{who}cpus, memory and gpus must not be negative")
        if self.ranks < 1:
            raise ResourceError(f"{who}ranks must be at least 1, got {self.ranks}")
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ResourceError(
                f"{who}gpus: {self.gpus} mixes whole and shared GPUs; "
                "ask for a whole number, or a share below 1"
            )
        if 0 < self.gpus < 1 and self.ranks > 1:
            raise ResourceError(
                f"{who}a GPU share ({self.gpus}) applies to a single process; "
                "give MPI ranks whole GPUs (gpus_per_rank: 1)"
            )
        if self.ranks_per_node is not None and self.ranks_per_node < 1:
            raise ResourceError(f"{who}ranks_per_node must be at least 1")
        nodes = self.node_count
        if self.nodes is not None and (self.nodes < 1 or self.nodes > self.ranks):
            raise ResourceError(
                f"{who}nodes: {self.nodes} with {self.ranks} rank(s); each node needs a rank"
            )
        if self.ranks_per_node is not None and nodes * self.ranks_per_node < self.ranks:
            raise ResourceError(
                f"{who}{self.ranks} ranks do not fit {nodes} node(s) x "
                f"{self.ranks_per_node} ranks_per_node; raise one of them"
            )

    @property
    def node_count(self) -> int:
        if self.nodes is not None:
            return self.nodes
        if self.ranks_per_node is not None:
            return -(-self.ranks // self.ranks_per_node)
        return 1

    @property
    def gpu_milli(self) -> int:
        """Share of one GPU per rank, in thousandths; GPU_MILLI for whole GPUs."""
        if 0 < self.gpus < 1 and self.share_gpus:
            return max(1, round(self.gpus * GPU_MILLI))
        return GPU_MILLI

    @property
    def whole_gpus(self) -> int:
        """Whole GPUs per rank; an unshared fraction rounds up to one GPU."""
        if 0 < self.gpus < 1:
            return 0 if self.share_gpus else 1
        return int(self.gpus)

    @property
    def total_gpu_milli(self) -> int:
        return self.ranks * (self.whole_gpus * GPU_MILLI or (self.gpu_milli if self.gpus else 0))

    def layout(self) -> tuple[int, ...]:
        """Ranks on each node, in block order (Slurm's default distribution)."""
        nodes = self.node_count
        per = self.ranks_per_node or -(-self.ranks // nodes)
        out: list[int] = []
        left = self.ranks
        for _ in range(nodes):
            take = min(per, left - (nodes - len(out) - 1))
            out.append(take)
            left -= take
        return tuple(out)

    def demands(self) -> tuple[NodeDemand, ...]:
        """One :class:`NodeDemand` per node of :meth:`layout`."""
        milli = self.gpu_milli if self.gpus and not self.whole_gpus else 0
        return tuple(
            NodeDemand(ranks, self.cpus, self.whole_gpus, milli, self.memory)
            for ranks in self.layout()
        )

    @classmethod
    def from_task(cls, task: TaskSpec, share_gpus: bool | None = None) -> Request:
        """The request of an hpcorch task spec (``resources`` and ``mpi``)."""
        res = task.resources
        mpi = task.mpi
        share = res.gpu_sharing if share_gpus is None else share_gpus
        if mpi is None:
            return cls(
                cpus=res.cpus,
                memory=res.memory,
                gpus=res.gpus,
                nodes=res.nodes if res.nodes > 1 else None,
                ranks=max(1, res.nodes),
                share_gpus=share,
                id=task.id,
            )
        return cls(
            cpus=mpi.cpus_per_rank,
            memory=res.memory,
            gpus=mpi.gpus_per_rank,
            ranks=mpi.ranks,
            ranks_per_node=mpi.ranks_per_node,
            share_gpus=share,
            id=task.id,
        )


@dataclass(frozen=True, slots=True)
class RankSlot:
    """The cores and GPUs bound to one MPI rank."""

    cores: tuple[int, ...]
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Slot:
    """What one node gives one task: core ids, GPU ids (each at ``gpu_milli``), memory."""

    node: str
    cores: tuple[int, ...]
    gpus: tuple[int, ...] = ()
    gpu_milli: int = GPU_MILLI
    memory: int = 0
    ranks: tuple[RankSlot, ...] = ()

    def record(self) -> dict[str, Any]:
        """The form the journal stores and ``status --json`` shows."""
        out: dict[str, Any] = {
            "node": self.node,
            "cores": list(self.cores),
            "gpus": list(self.gpus),
        }
        if self.gpus and self.gpu_milli != GPU_MILLI:
            out["gpu_share"] = self.gpu_milli / GPU_MILLI
        return out


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a whole request went: one slot per node, in rank order."""

    request: Request
    slots: tuple[Slot, ...]

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(s.node for s in self.slots)

    def records(self) -> list[dict[str, Any]]:
        return [s.record() for s in self.slots]

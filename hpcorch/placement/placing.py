"""Where the engine's tasks run on a node: slot requests, MPI steps, the workers' plugin.

The driver side builds, for each attempt, a :class:`Placing` (pure): the
:class:`~hpcorch.placement.Request` a worker's slot allocator serves (cores
and GPUs on the worker's node, NVLink pairs, cores near the GPUs) and, for an
MPI task, the :class:`MpiStep` the worker launches as an ``srun`` step inside
the allocation it runs in. :func:`register_slots` puts a
:class:`PoolSlots` plugin on every worker of the run, so each node's
allocator knows its topology from the site config. :func:`~hpcorch.placement.fit.check_placeable`
refuses, before anything is submitted, a task that no node could ever hold.

A task spanning ``N`` nodes runs on a worker whose allocation spans ``N``
nodes; such a worker advertises the Dask resource :func:`span_resource`
(``cpus_2nodes``: the cores it may give on each of its nodes) and the task
asks for its cores per node of it, so the scheduler sends it nowhere else
and never runs more steps than the nodes' cores hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcorch.errors import ResourceError
from hpcorch.gpu_env import GpuVendor
from hpcorch.placement.fit import partition_for
from hpcorch.placement.plugin import SlotPlugin
from hpcorch.placement.request import Request
from hpcorch.sites.model import Site
from hpcorch.spec import TaskSpec
from hpcorch.topology import NodeTopology
from hpcorch.training import TorchStep, torch_step

__all__ = [
    "MpiStep",
    "Placing",
    "PoolSlots",
    "knobs_resource",
    "placing_for",
    "pool_topologies",
    "rank_nodes",
    "register_slots",
    "span_resource",
]

logger = logging.getLogger(__name__)


def span_resource(nodes: int) -> str:
    """The Dask resource of workers whose allocation spans ``nodes`` nodes."""
    return f"cpus_{nodes}nodes"


def knobs_resource(task: TaskSpec) -> str | None:
    """The Dask resource of workers in jobs with this task's own Slurm knobs (QOS,
    constraint, reservation, account, exclusive), or None when it sets none: such a
    task runs only in a pool of its knobs (:mod:`hpcorch.provision.slurm_pool`)."""
    knobs = task.slurm_knobs
    if not knobs:
        return None
    text = ",".join(f"{k}={v}" for k, v in sorted(knobs.items()))
    return f"cpus_slurm_{hashlib.sha1(text.encode()).hexdigest()[:10]}"


@dataclass(frozen=True, slots=True)
class MpiStep:
    """One MPI task's step: its layout (an :class:`~hpcorch.mpi.MpiLayout`) and launch."""

    ranks: int
    ranks_per_node: int | None
    cpus_per_rank: int
    gpus_per_rank: float
    nodes: int
    launcher: tuple[str, ...]
    memory: int
    """Bytes per node (``srun --mem``); a step without it would claim the nodes' memory."""
    env: dict[str, str] = field(default_factory=dict)
    """The site's ``mpi.env``, added to every step's environment."""
    fallback: tuple[str, ...] = ()
    """The site's ``mpi.fallback``: the launcher where srun lacks ``launcher``'s plugin."""
    bind: str = "cores"
    """The site's ``mpi.bind``: ``cores`` or ``none``."""
    workdir: str = "."
    """Where function steps leave their pickled payload (every node must read it)."""
    torch: TorchStep | None = None
    """A torch.distributed training's launch (its ranks start under hpcorch.torch_run)."""

    def layout(self) -> tuple[int, ...]:
        """Ranks on each node, in rank order (block distribution)."""
        return Request(
            ranks=self.ranks, ranks_per_node=self.ranks_per_node, nodes=self.nodes
        ).layout()


@dataclass(frozen=True, slots=True)
class Placing:
    """What a worker needs to place one attempt: a slot request, or an MPI step."""

    request: Request | None = None
    """Cores/GPUs/memory on the worker's node; None: no slot (MPI steps, multi-node tasks)."""
    mpi: MpiStep | None = None


def placing_for(
    task: TaskSpec,
    site: Site,
    run_dir: Path,
    *,
    cpus: int | None = None,
    memory: int | None = None,
    gpus: float | None = None,
) -> Placing:
    """The placement of the next attempt of ``task`` (``cpus``/``memory``/``gpus``:
    what the retry policy raised them to, per node)."""
    if task.mpi is not None:
        mpi = task.mpi
        request = Request.from_task(task)
        per_node = max(request.layout())
        if memory:
            mem = memory
        else:
            # A share of a node's memory in proportion to the cores the step takes.
            node = partition_for(task, site).node
            mem = int(node.memory * min(1.0, per_node * mpi.cpus_per_rank / node.cores))
        return Placing(
            mpi=MpiStep(
                ranks=mpi.ranks,
                ranks_per_node=mpi.ranks_per_node,
                cpus_per_rank=mpi.cpus_per_rank,
                gpus_per_rank=mpi.gpus_per_rank,
                nodes=request.node_count,
                launcher=tuple(site.mpi.launcher),
                fallback=tuple(site.mpi.fallback),
                bind=site.mpi.bind,
                memory=mem,
                env=dict(site.mpi.env),
                workdir=str(run_dir / "mpi"),
                torch=torch_step(task, site, run_dir),
            )
        )
    if task.nodes > 1:
        return Placing()
    request = Request.from_task(task)
    changes: dict[str, Any] = {}
    if cpus is not None and cpus != request.cpus:
        changes["cpus"] = cpus
    if memory is not None and memory != request.memory:
        changes["memory"] = memory
    if gpus is not None and gpus != request.gpus:
        changes["gpus"] = gpus
    return Placing(request=dataclasses.replace(request, **changes) if changes else request)


def rank_nodes(step: MpiStep, nodelist: Sequence[str]) -> list[str]:
    """The node of each rank when the step runs on ``nodelist`` (block distribution)."""
    if len(nodelist) < step.nodes:
        raise ResourceError(
            f"an MPI step over {step.nodes} nodes cannot run in an allocation of "
            f"{len(nodelist)} node(s) ({','.join(nodelist)})"
        )
    return [
        node for node, count in zip(nodelist, step.layout(), strict=False) for _ in range(count)
    ]


class PoolSlots(SlotPlugin):
    """:class:`~hpcorch.placement.plugin.SlotPlugin` for the workers of every pool.

    Each worker takes the topology of its partition (``SLURM_JOB_PARTITION``,
    from the site configs); a worker of no known partition (the local site)
    takes ``default``, and without that detects its node. ``vendors``: the GPU
    vendor a partition's site node declares (``gpu_vendor``); others derive it.
    """

    def __init__(
        self,
        topologies: Mapping[str, NodeTopology],
        default: NodeTopology | None = None,
        *,
        share_gpus: bool = True,
        require_links: bool = True,
        vendors: Mapping[str, GpuVendor] | None = None,
    ) -> None:
        super().__init__(None, share_gpus=share_gpus, require_links=require_links)
        self.topologies = dict(topologies)
        self.default = default
        self.vendors = dict(vendors or {})

    def setup(self, worker: Any) -> None:
        partition = os.environ.get("SLURM_JOB_PARTITION", "")
        self.topology = self.topologies.get(partition, self.default)
        self.vendor = self.vendors.get(partition)
        super().setup(worker)


def pool_topologies(sites: Iterable[Site]) -> dict[str, NodeTopology]:
    """Partition name -> node topology; a name two sites give different shapes is left
    out (its workers detect their node)."""
    out: dict[str, NodeTopology] = {}
    clash: set[str] = set()
    for site in sites:
        for part in site.partitions:
            topology = NodeTopology.from_shape(part.node)
            if out.get(part.name, topology) != topology:
                clash.add(part.name)
            out[part.name] = topology
    return {name: t for name, t in out.items() if name not in clash}


def register_slots(client: Any, sites: Sequence[Site]) -> PoolSlots:
    """Put the slot plugin on the run's workers, present and future."""
    default = None
    if sites and sites[0].kind == "local":
        default = NodeTopology.from_shape(sites[0].partitions[0].node)
    slurm = [s for s in sites if s.kind == "slurm"]
    vendors = {
        part.name: part.node.gpu_vendor
        for site in slurm
        for part in site.partitions
        if part.node.gpu_vendor is not None
    }
    plugin = PoolSlots(pool_topologies(slurm), default, vendors=vendors)
    client.register_plugin(plugin)
    return plugin

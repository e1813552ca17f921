"""What the simulated driver knows: its configuration, its regions, its allocations, and
the per-task arrays every part of it reads (:class:`SimState`).

The driver is layered, one concept per module, each class adding to the one below:
:class:`SimState` here, then the ready queue and its demand summary
(:mod:`hpcorch.sim.demand`), placement on allocations' nodes
(:mod:`hpcorch.sim.placing`), attempts ending and being retried
(:mod:`hpcorch.sim.attempts`), and allocations submitted, started and ended
(:mod:`hpcorch.sim.allocations`); :class:`~hpcorch.sim.driver.WorkflowSim` runs it.
"""

from __future__ import annotations

import logging
import math
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from hpcorch.failures import FailureClass
from hpcorch.placement import Request
from hpcorch.policies.bundle import Policies
from hpcorch.policies.ledger import RetryLedger
from hpcorch.policies.scale import DEFAULT_INTERVAL_S, PoolHistory
from hpcorch.policies.state import (
    PartitionLimits,
    PoolShape,
    Resources,
    SiteLimits,
)
from hpcorch.sim.engine import EventLoop
from hpcorch.sim.slots import NodeFree, SlotPool
from hpcorch.sim.slurm import SimSlurm
from hpcorch.sim.topo import TopologyPlacer
from hpcorch.sim.workload import SimWorkload

__all__ = [
    "FAILURE_CODES",
    "TASK_STATE_NAMES",
    "DriverConfig",
    "Region",
    "SimAlloc",
    "SimState",
]

logger = logging.getLogger(__name__)

# task states (bytearray codes)
WAITING, READY, RUNNING, SUCCEEDED, FAILED, UPSTREAM_FAILED = range(6)
TASK_STATE_NAMES = ("pending", "pending", "running", "succeeded", "failed", "upstream_failed")
# injected outcomes of an attempt
OUTCOME_OK, OUTCOME_USER, OUTCOME_OOM, OUTCOME_TIMEOUT = range(4)
# failure codes in attempt records: 0 none, then FailureClass order
FAILURE_CODES: tuple[FailureClass | None, ...] = (None, *FailureClass)
FAILURE_CODE = {cls: i for i, cls in enumerate(FAILURE_CODES)}
# ready-task class: (cpus, memory, gpus, tag); tag is the task itself when it has node
# exclusions, LONG for tasks no live worker has time for (they wait for a fresh
# allocation without holding up shorter tasks of their shape), else -1
ReadyKey = tuple[int, int, int, int]
LONG = -2
POOL = "sim"


@dataclass(frozen=True)
class Region:
    """One simulated site: a cluster and the shape of its (one) partition's nodes."""

    cluster: SimSlurm
    cores_per_node: int
    memory_per_node: int = 0
    gpus_per_node: int = 0
    max_walltime_s: float | None = None
    partition: str = "batch"

    @property
    def name(self) -> str:
        return self.cluster.name


@dataclass(frozen=True)
class DriverConfig:
    nodes_per_allocation: int = 1
    max_allocations: int | None = None
    poll_s: float = DEFAULT_INTERVAL_S
    user_error_rate: float = 0.0
    """Probability that an attempt fails with a user error (partway through)."""
    oom_rate: float = 0.0
    """Probability that a first attempt runs out of memory (a retry with more memory succeeds)."""
    preemptible: bool = False
    """Submit allocations that higher-priority jobs may preempt (a scavenger QOS)."""
    placement: str | None = None
    """None: fast best fit on core/memory/GPU counts (:class:`SlotPool`), for big runs.
    A policy of :mod:`hpcorch.placement` (``packing``, ``fgd``, ``best_fit``,
    ``random_fit``): its :class:`~hpcorch.placement.Packer` chooses node, cores and GPUs
    within each allocation, as live, and the journal records them."""
    seed: int = 0


@dataclass(slots=True)
class SimAlloc:
    jid: int
    region: int
    submitted: float
    walltime: float
    started: float = -1.0
    ended: float = -1.0
    state: str = "pending"
    nodes: list[int] = field(default_factory=list)
    running: int = 0
    idle_since: float = -1.0
    draining: bool = False
    pool: SlotPool | None = None  # free slots of its nodes while it takes tasks


class SimState:
    """The driver's state, and the small reads and actions every layer shares."""

    # Event kinds of the loop's handlers (WorkflowSim registers them).
    _k_end: int
    _k_tick: int
    _k_ready: int

    def __init__(
        self,
        loop: EventLoop,
        workload: SimWorkload,
        regions: Sequence[Region],
        config: DriverConfig | None = None,
        policies: Policies | None = None,
    ) -> None:
        config = config or DriverConfig()
        policies = policies or Policies()
        if not regions:
            raise ValueError("a simulation needs at least one region")
        self.loop = loop
        self.w = workload
        self.regions = list(regions)
        self.config = config
        self.policies = policies
        self._rng = random.Random(config.seed)
        n = len(workload)
        # node ids: region r's node i is global id base[r] + i
        self._base: list[int] = []
        total = 0
        for region in self.regions:
            self._base.append(total)
            total += region.cluster.nodes
        self.total_nodes = total
        cores = max(r.cores_per_node for r in self.regions)
        self.free = NodeFree(total)
        self._pool_cores = cores
        # running, non-draining allocations by requested end, latest first: the first
        # one with room that lacks time for a task means none has time for it
        self.by_end: list[tuple[float, int]] = []
        self._new: list[int] = []  # tasks made ready since the last placement pass
        self.node_alloc = array("q", [-1]) * total
        self.node_tasks: dict[int, set[int]] = {}
        # tasks
        self.t_state = bytearray(n)
        self.t_pending = array("q", workload.n_parents)
        self.t_attempt = array("q", bytes(8 * n))
        self.t_node = array("q", [-1]) * n
        self.t_start = array("d", bytes(8 * n))
        self.t_ready_at = array("d", bytes(8 * n))
        self.t_outcome = bytearray(n)
        self.t_res: dict[int, Resources] = {}
        self.t_exclude: dict[int, set[int]] = {}
        self.t_reason: dict[int, str] = {}
        # attempt records (append-only columns)
        self.a_task = array("q")
        self.a_n = array("q")
        self.a_start = array("d")
        self.a_end = array("d")
        self.a_node = array("q")
        self.a_alloc = array("q")
        self.a_fail = array("b")
        # allocations
        self.allocs: list[SimAlloc] = []
        self._by_jid: list[dict[int, int]] = [{} for _ in self.regions]
        self._live: set[int] = set()
        self.ledger: RetryLedger[int] = RetryLedger(policies)
        # demand summary, kept in O(1) per change
        # ready tasks: one heap per resource class, longest critical path first
        self.ready: dict[ReadyKey, list[tuple[float, int]]] = {}
        self.n_ready = 0
        self.t_long = bytearray(n)  # set aside for a fresh allocation
        self._ready_share = 0.0
        self._ready_node_s = 0.0
        self._cp = workload.critical_path()  # priority: longest path to the end first
        self._ready_longest = 0.0
        self._ready_shortest = math.inf
        self._ready_widest = 0.0
        # tasks about to be ready (policies.scale.about_ready), counted as queued demand:
        # t_block counts the parents still in the way (not yet ready; long ones until done)
        self._lookahead_s = policies.scale_config.lookahead_s
        self.t_block = array("q", workload.n_parents)
        self.t_soon = bytearray(n)
        self._soon_n = 0
        self._soon_share = 0.0
        self._soon_node_s = 0.0
        self._running_share = 0.0
        self.running = 0
        self.finished = 0
        self.succeeded = 0
        self.retries = 0
        self.task_wait_s = 0.0
        self.task_busy_core_s = 0.0
        self.alloc_core_s = 0.0
        self.makespan_s = 0.0
        self.start_time = loop.now
        self.done = n == 0
        self._cores = self.regions[0].cores_per_node
        # One pool for the whole workflow. With several regions the region policy picks
        # the site of each allocation the pool submits, and the pool's partition counts
        # the nodes of all of them.
        first = self.regions[0]
        self._limits = SiteLimits(
            site=first.name,
            partitions=(
                PartitionLimits(
                    name=first.partition,
                    nodes=total,
                    cores_per_node=first.cores_per_node,
                    memory_per_node=first.memory_per_node or 1 << 40,
                    gpus_per_node=first.gpus_per_node,
                    max_walltime_s=first.max_walltime_s,
                ),
            ),
        )
        self._history: dict[str, PoolHistory] = {}
        # topology placement (config.placement): one Packer per running allocation
        self._topo = (
            TopologyPlacer(config.placement, (self._request(t) for t in range(n)), seed=config.seed)
            if config.placement
            else None
        )
        self.a_slot: dict[int, tuple[str, str]] = {}  # attempt -> (cores, gpus) as journaled
        self._last_slot: dict[int, tuple[str, str]] = {}
        self._observed_wait: list[float | None] = [None] * len(self.regions)
        self._pool = PoolShape(
            name=POOL,
            site=self.regions[0].name,
            partition=self.regions[0].partition,
            nodes_per_allocation=config.nodes_per_allocation,
            max_walltime_s=self.regions[0].max_walltime_s,
            max_allocations=config.max_allocations
            if config.max_allocations is not None
            else max(1, total // config.nodes_per_allocation),
        )
        for region in self.regions:
            region.cluster.open_sources += 1

    def node_name(self, gid: int) -> str:
        for r in range(len(self.regions) - 1, -1, -1):
            if gid >= self._base[r]:
                return f"{self.regions[r].name}-n{gid - self._base[r]}"
        return f"n{gid}"  # pragma: no cover

    def _key_of(self, t: int) -> ReadyKey:
        res = self.t_res.get(t)
        excluded = t if t in self.t_exclude else -1
        if res is None:
            w = self.w
            return (w.cpus[t], w.memory[t], w.gpus[t], excluded)
        return (res.cpus, res.memory, res.gpus, excluded)

    def _request(self, t: int) -> Request:
        res = self._resources(t)
        return Request(cpus=res.cpus, memory=res.memory, gpus=res.gpus, id=self.w.task_id(t))

    def _resources(self, t: int) -> Resources:
        res = self.t_res.get(t)
        if res is not None:
            return res
        w = self.w
        return Resources(
            cpus=w.cpus[t],
            memory=w.memory[t],
            gpus=w.gpus[t],
            walltime_s=w.walltime[t] or None,
        )

    def _release(self, index: int) -> None:
        alloc = self.allocs[index]
        if alloc.state in ("pending", "running"):
            self.regions[alloc.region].cluster.cancel(alloc.jid)

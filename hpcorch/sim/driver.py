"""The workflow side of a simulation: hpcorch's driver loop on simulated allocations.

:class:`WorkflowSim` does what the live engine does, through the same policy
calls (:class:`~hpcorch.policies.bundle.Policies`):

- every ``poll_s`` (the monitor's interval) it summarises the demand in O(1)
  and asks ``scale.decide_scale`` which allocations to submit (count, nodes,
  walltime) and which to release; each submission is an ``sbatch`` on the
  site ``region.choose_site`` picks, and it waits in the simulated Slurm queue
  behind everyone else's jobs;
- ready tasks, longest critical path first, are placed on the nodes of
  running allocations (best fit, :class:`~hpcorch.sim.slots.SlotPool`), and
  only on workers whose time left
  fits the task's estimate (``walltime.fits``); a worker winding down takes
  no new task and its allocation is released once idle;
- a failed attempt (an injected user error or OOM, a task walltime, a lost
  node, an allocation that ended under it) becomes :class:`Evidence`, is
  classified by ``failures.diagnose`` and handed, through the retry ledger the
  live engine keeps too (:class:`~hpcorch.policies.ledger.RetryLedger`), to
  ``retry.decide_retry``, whose decision (retry with more memory or time, elsewhere, after a delay,
  or give up) the driver carries out.

Per-task state lives in arrays; per-attempt records are appended to arrays
and turned into journal rows only on request (:mod:`hpcorch.sim.output`).
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from hpcorch.failures import Diagnosis, Evidence, FailureClass
from hpcorch.placement import Request
from hpcorch.policies.bundle import Policies
from hpcorch.policies.ledger import RetryLedger
from hpcorch.policies.scale import DEFAULT_INTERVAL_S, PoolHistory
from hpcorch.policies.state import (
    Allocation,
    Attempt,
    PartitionLimits,
    PoolDemand,
    PoolShape,
    Resources,
    SiteLimits,
    SiteQueue,
    TaskInfo,
)
from hpcorch.sim.engine import EventLoop
from hpcorch.sim.slots import NodeFree, SlotPool
from hpcorch.sim.slurm import JobState, SimSlurm
from hpcorch.sim.topo import TopologyPlacer, node_topology
from hpcorch.sim.workload import SimWorkload

__all__ = ["DriverConfig", "Region", "WorkflowSim"]

logger = logging.getLogger(__name__)

# task states (bytearray codes)
WAITING, READY, RUNNING, SUCCEEDED, FAILED, UPSTREAM_FAILED = range(6)
TASK_STATE_NAMES = ("pending", "pending", "running", "succeeded", "failed", "upstream_failed")
# injected outcomes of an attempt
_OK, _USER, _OOM, _TIMEOUT = range(4)
# failure codes in attempt records: 0 none, then FailureClass order
FAILURE_CODES: tuple[FailureClass | None, ...] = (None, *FailureClass)
_CODE = {cls: i for i, cls in enumerate(FAILURE_CODES)}
# ready-task class: (cpus, memory, gpus, tag); tag is the task itself when it has node
# exclusions, _LONG for tasks no live worker has time for (they wait for a fresh
# allocation without holding up shorter tasks of their shape), else -1
_Key = tuple[int, int, int, int]
_LONG = -2
_POOL = "sim"


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
class _Alloc:
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


class WorkflowSim:
    """Run one workflow on simulated regions. Call :meth:`run`, then read the results."""

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
        self.allocs: list[_Alloc] = []
        self._by_jid: list[dict[int, int]] = [{} for _ in self.regions]
        self._live: set[int] = set()
        self.ledger: RetryLedger[int] = RetryLedger(policies)
        # demand summary, kept in O(1) per change
        # ready tasks: one heap per resource class, longest critical path first
        self.ready: dict[_Key, list[tuple[float, int]]] = {}
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
        self._k_end = loop.register(self._on_task_end)
        self._k_tick = loop.register(self._on_tick)
        self._k_ready = loop.register(self._on_retry_ready)
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
            name=_POOL,
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

    # -- running ----------------------------------------------------------------

    def start(self) -> None:
        """Submit the workflow at the loop's current time; the loop's ``run`` plays it."""
        self.start_time = self.loop.now
        for t in range(len(self.w)):
            if self.t_pending[t] == 0:
                self._make_ready(t)
        self.loop.at(self.loop.now, self._k_tick)

    def run(self, until: float = math.inf) -> None:
        """:meth:`start`, then run the loop to the end (or ``until``)."""
        self.start()
        self.loop.run(until)

    def node_name(self, gid: int) -> str:
        for r in range(len(self.regions) - 1, -1, -1):
            if gid >= self._base[r]:
                return f"{self.regions[r].name}-n{gid - self._base[r]}"
        return f"n{gid}"  # pragma: no cover

    # -- demand and scaling -----------------------------------------------------------

    def _make_ready(self, t: int) -> None:
        if self.t_soon[t]:
            self.t_soon[t] = 0
            self._soon_n -= 1
            share = min(1.0, self._key_of(t)[0] / self._cores)
            self._soon_share -= share
            self._soon_node_s -= share * self.w.estimate[t]
        if self.t_attempt[t] == 0 and self.w.estimate[t] <= self._lookahead_s:
            w = self.w
            for c in w.child_idx[w.child_ptr[t] : w.child_ptr[t + 1]]:
                self._unblock(c)
        self.t_state[t] = READY
        self.t_ready_at[t] = self.loop.now
        key = self._key_of(t)
        self.t_long[t] = 0
        heap = self.ready.get(key)
        if heap is None:
            heap = self.ready[key] = []
        heapq.heappush(heap, (-self._cp[t], t))
        self.n_ready += 1
        self._new.append(t)
        share = min(1.0, key[0] / self._cores)
        est = self.w.estimate[t]
        self._ready_share += share
        self._ready_node_s += share * est
        self._widen(est, share)

    def _widen(self, est: float, share: float) -> None:
        """The queued work's extremes now include a task of ``est`` seconds and ``share``."""
        self._ready_longest = max(self._ready_longest, est)
        self._ready_shortest = min(self._ready_shortest, est)
        self._ready_widest = max(self._ready_widest, share)

    def _unblock(self, c: int) -> None:
        """One parent of ``c`` is out of the way: ready and short, or done."""
        left = self.t_block[c] - 1
        self.t_block[c] = left
        if left == 0 and self.t_state[c] == WAITING and self.t_pending[c] > 0:
            self.t_soon[c] = 1
            self._soon_n += 1
            share = min(1.0, self._key_of(c)[0] / self._cores)
            est = self.w.estimate[c]
            self._soon_share += share
            self._soon_node_s += share * est
            self._widen(est, share)

    def _unready(self, t: int, cpus: int) -> None:
        share = min(1.0, cpus / self._cores)
        self._ready_share -= share
        self._ready_node_s -= share * self.w.estimate[t]

    def _on_tick(self, _payload: object) -> None:
        """The monitor's poll: ask the scaling policy, apply its plan."""
        if self.done:
            return
        now = self.loop.now
        self._retire_idle_draining()
        allocations = [
            Allocation(
                id=str(i),
                pool=_POOL,
                state="running" if a.state == "running" else "pending",
                submitted_at=a.submitted,
                walltime_s=a.walltime,
                nodes=len(a.nodes) or self.config.nodes_per_allocation,
                started_at=a.started if a.started >= 0 else None,
                idle_since=a.idle_since if a.idle_since >= 0 else None,
            )
            for i in sorted(self._live)
            for a in (self.allocs[i],)
            if not a.draining
        ]
        queued = self.n_ready + self._soon_n
        # Running minima and maxima since the queue last emptied: they only widen, which
        # errs towards keeping an allocation and asking for enough walltime.
        demand = PoolDemand(
            pool=_POOL,
            queued=queued,
            queued_share=max(0.0, self._ready_share + self._soon_share) if queued else 0.0,
            queued_node_s=max(0.0, self._ready_node_s + self._soon_node_s) if queued else 0.0,
            shortest_s=self._ready_shortest if queued else 0.0,
            longest_s=self._ready_longest if queued else 0.0,
            widest=self._ready_widest if queued else 0.0,
            running=self.running,
            running_share=max(0.0, self._running_share),
            expected_wait_s=min((w for w in self._observed_wait if w is not None), default=0.0),
        )
        plan = self.policies.scale(
            {_POOL: demand},
            allocations,
            [self._pool],
            {self._limits.site: self._limits},
            history=self._history,
            now=now,
            config=self.policies.scale_config,
        )
        self._history = self.policies.record_scale(self._history, plan, now)
        for release in plan.releases:
            self._release(int(release.allocation))
        for submit in plan.submits:
            for _ in range(submit.count):
                self._submit(submit.nodes, submit.walltime_s)
        if not queued:
            self._ready_longest = 0.0
            self._ready_shortest = math.inf
            self._ready_widest = 0.0
        self.loop.at(now + self.config.poll_s, self._k_tick)

    def _submit(self, nodes: int, walltime: float) -> None:
        """sbatch one allocation, at the site the region policy picks."""
        now = self.loop.now
        queues = []
        for i, r in enumerate(self.regions):
            cluster = r.cluster
            queues.append(
                SiteQueue(
                    site=r.name,
                    capacity_nodes=cluster.nodes,
                    idle_nodes=cluster.free_nodes,
                    slurm_start_s=max(0.0, cluster.estimate_start(nodes) - now),
                    observed_wait_s=self._observed_wait[i],
                    cores_per_node=r.cores_per_node,
                    gpus_per_node=r.gpus_per_node,
                )
            )
        decision = self.policies.choose_site(
            Resources(cpus=self._cores, nodes=nodes),
            walltime,
            queues,
            {},
            config=self.policies.region_config,
        )
        if decision.site is None:
            logger.warning("no site for a new allocation: %s", decision.reason)
            return
        ri = next(i for i, r in enumerate(self.regions) if r.name == decision.site)
        region = self.regions[ri]
        index = len(self.allocs)
        alloc = _Alloc(jid=-1, region=ri, submitted=now, walltime=walltime)
        self.allocs.append(alloc)
        self._live.add(index)
        alloc.jid = region.cluster.submit(
            min(nodes, region.cluster.nodes),
            walltime,
            requeue=False,
            preemptible=self.config.preemptible,
            owner=_Listener(self, ri),
        )
        self._by_jid[ri][alloc.jid] = index

    def _release(self, index: int) -> None:
        alloc = self.allocs[index]
        if alloc.state in ("pending", "running"):
            self.regions[alloc.region].cluster.cancel(alloc.jid)

    def _retire_idle_draining(self) -> None:
        now = self.loop.now
        for _, index in list(self.by_end):
            alloc = self.allocs[index]
            if self.policies.winding_down(
                alloc.started + alloc.walltime - now, self.policies.walltime_config
            ):
                self._drain(index)
        for index in [i for i in self._live if self.allocs[i].draining]:
            if self.allocs[index].running == 0:
                self._release(index)

    # -- allocations (JobListener side) -------------------------------------------------

    def _alloc_started(self, region: int, jid: int, nodes: list[int]) -> None:
        index = self._by_jid[region][jid]
        alloc = self.allocs[index]
        now = self.loop.now
        alloc.started = now
        alloc.state = "running"
        self._observed_wait[region] = self.policies.update_wait(
            self._observed_wait[region], now - alloc.submitted, self.policies.region_config
        )
        alloc.idle_since = now
        r = self.regions[region]
        base = self._base[region]
        gids = [base + n for n in nodes]
        alloc.nodes = gids
        pool = alloc.pool = SlotPool(self.free, self._pool_cores)
        for gid in gids:
            self.node_alloc[gid] = index
            self.free.reset(gid, r.cores_per_node, r.memory_per_node, r.gpus_per_node)
            pool.add(gid)
        if self._topo is not None:
            topology = node_topology(r.cores_per_node, r.memory_per_node, r.gpus_per_node)
            self._topo.open(index, [(self.node_name(g), g) for g in gids], topology)
        bisect.insort(self.by_end, (-(now + alloc.walltime), index))
        self._new.clear()  # every ready task is tried on the new nodes below
        for gid in gids:
            self._fill(gid)
        self._place_new()

    def _alloc_ended(self, region: int, jid: int, state: JobState) -> None:
        index = self._by_jid[region][jid]
        alloc = self.allocs[index]
        now = self.loop.now
        was_running = alloc.state == "running"
        alloc.state = state.name.lower()
        alloc.ended = now
        self._live.discard(index)
        if not was_running:
            return
        r = self.regions[region]
        self.alloc_core_s += (now - alloc.started) * len(alloc.nodes) * r.cores_per_node
        failed_node = -1
        if state is JobState.NODE_FAIL:
            cluster = r.cluster
            failed_node = next(
                (g for g in alloc.nodes if cluster.node_job[g - self._base[region]] == -2), -1
            )
        self._drain(index)
        for gid in alloc.nodes:
            tasks = self.node_tasks.pop(gid, None)
            for t in list(tasks or ()):
                if state is JobState.NODE_FAIL and gid != failed_node:
                    # the allocation died on another node: Slurm killed this one with it
                    evidence = Evidence(slurm_state="CANCELLED", scope="allocation")
                else:
                    evidence = Evidence(
                        slurm_state=state.name,
                        scope="allocation",
                        node=self.node_name(gid),
                        node_healthy=gid != failed_node,
                    )
                self._end_attempt(t, gid, evidence)
            self.node_alloc[gid] = -1
        if self._topo is not None:
            self._topo.close(index)
        self._place_new()

    # -- tasks --------------------------------------------------------------------

    def _drain(self, index: int) -> None:
        """The worker takes no new task (winding down, ended or lost)."""
        alloc = self.allocs[index]
        if alloc.draining:
            return
        alloc.draining = True
        alloc.pool = None
        if alloc.started >= 0:
            entry = (-(alloc.started + alloc.walltime), index)
            i = bisect.bisect_left(self.by_end, entry)
            if i < len(self.by_end) and self.by_end[i] == entry:
                del self.by_end[i]

    # -- placement ------------------------------------------------------------------
    #
    # Capacity grows only where a task ended or an allocation started, and time
    # left only shrinks, so after each event only two things can newly start: ready
    # tasks on the node that freed up (:meth:`_fill`, oldest first), and tasks that
    # became ready since the last pass, anywhere (:meth:`_place_new`). That keeps a
    # placement O(resource classes + allocations), never O(ready tasks x nodes).

    def _key_of(self, t: int) -> _Key:
        res = self.t_res.get(t)
        excluded = t if t in self.t_exclude else -1
        if res is None:
            w = self.w
            return (w.cpus[t], w.memory[t], w.gpus[t], excluded)
        return (res.cpus, res.memory, res.gpus, excluded)

    def _request(self, t: int) -> Request:
        res = self._resources(t)
        return Request(cpus=res.cpus, memory=res.memory, gpus=res.gpus, id=self.w.task_id(t))

    def _set_aside(self, t: int, key: _Key) -> None:
        """No live worker has time for ``t``: it waits for a fresh allocation, in a class
        of its own shape, without holding up shorter tasks. Its old entry goes stale."""
        self.t_long[t] = 1
        long_key = (key[0], key[1], key[2], _LONG)
        heap = self.ready.get(long_key)
        if heap is None:
            heap = self.ready[long_key] = []
        heapq.heappush(heap, (-self._cp[t], t))

    def _latest_remaining(self) -> float:
        return -self.by_end[0][0] - self.loop.now if self.by_end else 0.0

    def _fill(self, node: int) -> None:
        """Start ready tasks on ``node``: longest critical path first (the live engine's
        priority), among the classes that fit it."""
        index = self.node_alloc[node]
        if index < 0 or not self.n_ready:
            return
        alloc = self.allocs[index]
        if alloc.pool is None or node not in alloc.pool:
            return
        free = self.free
        classes = self.ready
        t_state = self.t_state
        t_long = self.t_long
        est_of = self.w.estimate
        fits = self.policies.fits
        wconf = self.policies.walltime_config
        remaining = alloc.started + alloc.walltime - self.loop.now
        pop = heapq.heappop
        skip: set[_Key] = set()
        while classes:
            room = free.cpu[node]
            if room <= 0:
                return
            best: _Key | None = None
            best_head = (math.inf, 0)
            for key, heap in classes.items():
                if key[0] <= room and key not in skip and heap[0] < best_head:
                    best_head = heap[0]
                    best = key
            if best is None:
                return
            heap = classes[best]
            cpus, mem, gpus, tag = best
            t = best_head[1]
            if t_state[t] != READY or t_long[t] != (tag == _LONG):
                pop(heap)  # stale: started elsewhere or set aside
                if not heap:
                    del classes[best]
                continue
            if (
                (mem and free.mem[node] < mem)
                or (gpus and free.gpu[node] < gpus)
                or (tag >= 0 and node in self.t_exclude.get(tag, ()))
            ):
                skip.add(best)
                continue
            if not fits(est_of[t], remaining, wconf):
                if tag != _LONG and not fits(est_of[t], self._latest_remaining(), wconf):
                    pop(heap)
                    if not heap:
                        del classes[best]
                    self._set_aside(t, best)
                else:
                    skip.add(best)
                continue
            chosen = node if self._topo is None else self._topo.place(t, index, self._request(t))
            if chosen < 0:
                skip.add(best)
                continue
            pop(heap)
            if not heap:
                del classes[best]
            self._start(t, chosen, cpus, mem, gpus)

    def _place_new(self) -> None:
        """Place the tasks made ready since the last pass, on any worker with room and time."""
        new = self._new
        if not new:
            return
        self._new = []
        if not self.by_end:
            return
        t_state = self.t_state
        allocs = self.allocs
        est_of = self.w.estimate
        fits = self.policies.fits
        wconf = self.policies.walltime_config
        now = self.loop.now
        failed: set[_Key] = set()  # capacity only shrinks during the pass
        for t in new:
            if t_state[t] != READY or self.t_long[t]:
                continue
            key = self._key_of(t)
            if key in failed:
                continue
            cpus, mem, gpus, tag = key
            exclude = self.t_exclude.get(t, ()) if tag >= 0 else ()
            estimate = est_of[t]
            node = -1
            no_time = False
            for neg_end, index in self.by_end:
                pool = allocs[index].pool
                if pool is None or pool.top < cpus:
                    continue
                if not fits(estimate, -neg_end - now, wconf):
                    no_time = True  # and none of the later-ending ones has time either
                    break
                node = pool.find(cpus, mem, gpus, exclude)
                if node >= 0 and self._topo is not None:
                    node = self._topo.place(t, index, self._request(t))
                if node >= 0:
                    break
            if node >= 0:
                self._start(t, node, cpus, mem, gpus)  # its heap entry goes stale
            elif no_time and tag == -1:
                self._set_aside(t, key)
            else:
                failed.add(key)

    def _start(self, t: int, node: int, cpus: int, mem: int, gpus: int) -> None:
        now = self.loop.now
        self._unready(t, cpus)
        self.n_ready -= 1
        self._running_share += min(1.0, cpus / self._cores)
        alloc = self.allocs[self.node_alloc[node]]
        pool = alloc.pool
        if pool is not None:
            pool.take(node, cpus, mem, gpus)
        else:  # pragma: no cover - placement only uses nodes of taking allocations
            self.free.cpu[node] -= cpus
        alloc.running += 1
        alloc.idle_since = -1.0
        tasks = self.node_tasks.get(node)
        if tasks is None:
            tasks = self.node_tasks[node] = set()
        tasks.add(t)
        self.t_state[t] = RUNNING
        self.t_node[t] = node
        self.t_start[t] = now
        self.task_wait_s += now - self.t_ready_at[t]
        n = self.t_attempt[t] + 1
        self.t_attempt[t] = n
        self.running += 1
        duration = self.w.duration[t]
        outcome = _OK
        rng = self._rng.random
        res = self.t_res.get(t)
        limit = res.walltime_s if res is not None else self.w.walltime[t]
        if self.config.user_error_rate and rng() < self.config.user_error_rate:
            outcome = _USER
            duration *= rng()
        elif self.config.oom_rate and res is None and rng() < self.config.oom_rate:
            outcome = _OOM
            duration *= 0.5
        if limit and duration > limit:
            outcome = _TIMEOUT
            duration = limit
        self.t_outcome[t] = outcome
        self.loop.at(now + duration, self._k_end, (t, n))

    def _on_task_end(self, payload: tuple[int, int]) -> None:
        t, n = payload
        if self.t_attempt[t] != n or self.t_state[t] != RUNNING:
            return  # stale: the attempt was already ended by its allocation
        node = self.t_node[t]
        outcome = self.t_outcome[t]
        if outcome == _OK:
            self._end_attempt(t, node, None)
        elif outcome == _USER:
            self._end_attempt(t, node, Evidence(slurm_state="FAILED", exit_code=1))
        elif outcome == _OOM:
            self._end_attempt(t, node, Evidence(slurm_state="OUT_OF_MEMORY"))
        else:
            self._end_attempt(t, node, Evidence(slurm_state="TIMEOUT"))
        self._fill(node)
        self._place_new()

    def _end_attempt(self, t: int, node: int, evidence: Evidence | None) -> None:
        """Close the running attempt of ``t`` on ``node``: free it, record it, decide what next."""
        now = self.loop.now
        res = self.t_res.get(t)
        w = self.w
        if res is None:
            cpus, mem, gpus = w.cpus[t], w.memory[t], w.gpus[t]
        else:
            cpus, mem, gpus = res.cpus, res.memory, res.gpus
        index = self.node_alloc[node]
        if self._topo is not None and (slot := self._topo.release(t)) is not None:
            self._last_slot[t] = slot
        pool = self.allocs[index].pool if index >= 0 else None
        if pool is not None:
            pool.release(node, cpus, mem, gpus)
        else:
            self.free.cpu[node] += cpus
            self.free.mem[node] += mem
            self.free.gpu[node] += gpus
        tasks = self.node_tasks.get(node)
        if tasks is not None:
            tasks.discard(t)
        if index >= 0:
            alloc = self.allocs[index]
            alloc.running -= 1
            if alloc.running == 0:
                alloc.idle_since = now
                if alloc.draining:
                    self._release(index)
        start = self.t_start[t]
        self.running -= 1
        self._running_share -= min(1.0, cpus / self._cores)
        self.task_busy_core_s += (now - start) * cpus
        diagnosis = None if evidence is None else self.policies.diagnose(evidence)
        self.a_task.append(t)
        self.a_n.append(self.t_attempt[t])
        self.a_start.append(start)
        self.a_end.append(now)
        self.a_node.append(node)
        self.a_alloc.append(index)
        self.a_fail.append(0 if diagnosis is None else _CODE[diagnosis.failure])
        if self._last_slot and (slot := self._last_slot.pop(t, None)) is not None:
            self.a_slot[len(self.a_task) - 1] = slot
        if diagnosis is None:
            self.t_state[t] = SUCCEEDED
            self.succeeded += 1
            self._finish_task(t)
            ptr = w.child_ptr
            pending = self.t_pending
            long = w.estimate[t] > self._lookahead_s
            for c in w.child_idx[ptr[t] : ptr[t + 1]]:
                left = pending[c] - 1
                pending[c] = left
                if left == 0 and self.t_state[c] == WAITING:
                    self._make_ready(c)
                elif long:
                    self._unblock(c)
            return
        self._retry_or_fail(t, node, start, diagnosis)

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

    def _retry_or_fail(self, t: int, node: int, start: float, diagnosis: Diagnosis) -> None:
        now = self.loop.now
        resources = self._resources(t)
        decision, _ = self.ledger.failed(
            t,
            TaskInfo(
                id=self.w.task_id(t),
                resources=resources,
                retries=self.w.retries[t],
                estimate_s=self.w.estimate[t],
            ),
            Attempt(
                n=self.t_attempt[t],
                resources=resources,
                failure=diagnosis.failure,
                node=self.node_name(node),
                start=start,
                end=now,
                scope=diagnosis.scope,
            ),
            diagnosis,
            self._limits,
            now=now,
        )
        if decision.retry:
            self.retries += 1
            if decision.resources != resources:
                self.t_res[t] = decision.resources
            if decision.exclude_nodes:
                self.t_exclude[t] = self._gids(decision.exclude_nodes)
            self.t_state[t] = WAITING
            if decision.delay_s > 0:
                self.loop.at(now + decision.delay_s, self._k_ready, t)
            else:
                self._make_ready(t)
            return
        self.t_state[t] = FAILED
        self.t_reason[t] = decision.reason
        self._finish_task(t)
        self._fail_descendants(t)

    def _gids(self, names: frozenset[str]) -> set[int]:
        out: set[int] = set()
        for name in names:
            site, _, idx = name.rpartition("-n")
            for r, region in enumerate(self.regions):
                if region.name == site and idx.isdigit():
                    out.add(self._base[r] + int(idx))
        return out

    def _on_retry_ready(self, t: int) -> None:
        if self.t_state[t] == WAITING:
            self._make_ready(t)
            self._place_new()

    def _fail_descendants(self, t: int) -> None:
        w = self.w
        todo = [t]
        while todo:
            u = todo.pop()
            for c in w.child_idx[w.child_ptr[u] : w.child_ptr[u + 1]]:
                if self.t_state[c] == WAITING:
                    self.t_state[c] = UPSTREAM_FAILED
                    self._finish_task(c)
                    todo.append(c)

    def _finish_task(self, t: int) -> None:
        self.finished += 1
        if self.finished == len(self.w):
            self._all_done()

    def _all_done(self) -> None:
        self.done = True
        self.makespan_s = self.loop.now - self.start_time
        for index in list(self._live):
            self._release(index)
        for region in self.regions:
            region.cluster.open_sources -= 1


class _Listener:
    """Routes one region's allocation events back to the driver."""

    __slots__ = ("region", "sim")

    def __init__(self, sim: WorkflowSim, region: int) -> None:
        self.sim = sim
        self.region = region

    def job_started(self, jid: int, nodes: list[int]) -> None:
        self.sim._alloc_started(self.region, jid, nodes)

    def job_ended(self, jid: int, state: JobState) -> None:
        self.sim._alloc_ended(self.region, jid, state)

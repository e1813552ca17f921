"""Simulated allocations: scaled by the policy each poll, submitted where the region
policy says, started and ended by the simulated Slurm.
"""

from __future__ import annotations

import bisect
import logging
import math

from hpcorch.failures import Evidence
from hpcorch.policies.state import (
    Allocation,
    PoolDemand,
    Resources,
    SiteQueue,
)
from hpcorch.sim.attempts import Attempts
from hpcorch.sim.slots import SlotPool
from hpcorch.sim.slurm import SimJobState
from hpcorch.sim.state import (
    POOL,
    SimAlloc,
)
from hpcorch.sim.topo import node_topology

__all__ = ["Allocations"]

logger = logging.getLogger(__name__)


class Allocations(Attempts):
    """The scaling loop and each allocation's life."""

    def _on_tick(self, _payload: object) -> None:
        """The monitor's poll: ask the scaling policy, apply its plan."""
        if self.done:
            return
        now = self.loop.now
        self._retire_idle_draining()
        allocations = [
            Allocation(
                id=str(i),
                pool=POOL,
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
            pool=POOL,
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
            {POOL: demand},
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
        alloc = SimAlloc(jid=-1, region=ri, submitted=now, walltime=walltime)
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

    def _alloc_ended(self, region: int, jid: int, state: SimJobState) -> None:
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
        if state is SimJobState.NODE_FAIL:
            cluster = r.cluster
            failed_node = next(
                (g for g in alloc.nodes if cluster.node_job[g - self._base[region]] == -2), -1
            )
        self._drain(index)
        for gid in alloc.nodes:
            tasks = self.node_tasks.pop(gid, None)
            for t in list(tasks or ()):
                if state is SimJobState.NODE_FAIL and gid != failed_node:
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


class _Listener:
    """Routes one region's allocation events back to the driver."""

    __slots__ = ("region", "sim")

    def __init__(self, sim: Allocations, region: int) -> None:
        self.sim = sim
        self.region = region

    def job_started(self, jid: int, nodes: list[int]) -> None:
        self.sim._alloc_started(self.region, jid, nodes)

    def job_ended(self, jid: int, state: SimJobState) -> None:
        self.sim._alloc_ended(self.region, jid, state)

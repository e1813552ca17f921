"""The end of each simulated attempt: recorded, classified, retried or failed.

A failed attempt becomes :class:`~hpcorch.failures.Evidence`, the bundle's
``diagnose`` classifies it and the :class:`~hpcorch.policies.ledger.RetryLedger`
(the live engine keeps one too) asks ``decide_retry``; this module carries out
its decision.
"""

from __future__ import annotations

import logging

from hpcorch.failures import Diagnosis, Evidence
from hpcorch.policies.state import (
    Attempt,
    TaskInfo,
)
from hpcorch.sim.placing import Placing
from hpcorch.sim.state import (
    FAILED,
    FAILURE_CODE,
    OUTCOME_OK,
    OUTCOME_OOM,
    OUTCOME_USER,
    RUNNING,
    SUCCEEDED,
    UPSTREAM_FAILED,
    WAITING,
)

__all__ = ["Attempts"]

logger = logging.getLogger(__name__)


class Attempts(Placing):
    """Attempts ending, their retries, and the tasks they leave failed."""

    def _on_task_end(self, payload: tuple[int, int]) -> None:
        t, n = payload
        if self.t_attempt[t] != n or self.t_state[t] != RUNNING:
            return  # stale: the attempt was already ended by its allocation
        node = self.t_node[t]
        outcome = self.t_outcome[t]
        if outcome == OUTCOME_OK:
            self._end_attempt(t, node, None)
        elif outcome == OUTCOME_USER:
            self._end_attempt(t, node, Evidence(slurm_state="FAILED", exit_code=1))
        elif outcome == OUTCOME_OOM:
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
        self.a_fail.append(0 if diagnosis is None else FAILURE_CODE[diagnosis.failure])
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

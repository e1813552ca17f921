"""Recovery of a failed attempt: gather the evidence, classify it, decide, remember.

For every failed attempt the engine calls :meth:`Recovery.failed` with what
Dask returned. This module turns it into :class:`~hpcorch.failures.Evidence`:

* the worker's own report (:class:`~hpcorch.engine.retry.TaskFailed`: exit
  code, signal, walltime kill, peak memory of the command's process tree,
  node) or the Python exception a function raised;
* a lost worker (``KilledWorker``): which node and Slurm job it lived in,
  from the :class:`~hpcorch.engine.monitor.Monitor`; the monitor refreshes
  its one batched Slurm poll first, so an allocation that was cancelled,
  timed out or preempted under the task is seen as such;
* the node's health as the monitor last saw it;

then the run's :class:`~hpcorch.policies.bundle.Policies` classify it
(:func:`~hpcorch.failures.diagnose`) and decide
(:func:`~hpcorch.policies.retry.decide_retry`) through the
:class:`~hpcorch.policies.ledger.RetryLedger` the simulator keeps too: the
per-task history, the run's infrastructure failure count and the node strike
table. The recovery adds each task's excluded nodes; :meth:`allowed_workers`
turns them into the Dask workers a retried task may use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from hpcorch.engine import reconnect
from hpcorch.engine.retry import TaskFailed, policy_resources
from hpcorch.failures import Diagnosis, Evidence
from hpcorch.policies.bundle import Policies
from hpcorch.policies.ledger import RetryLedger
from hpcorch.policies.retry import NodeStrike, RetryConfig, RetryDecision
from hpcorch.policies.state import Attempt, Resources, TaskInfo, site_limits
from hpcorch.sites.model import Site
from hpcorch.slurm.states import JobState
from hpcorch.spec import TaskSpec

if TYPE_CHECKING:
    from hpcorch.engine.monitor import Monitor, WorkerInfo

__all__ = ["Outcome", "Recovery", "evidence_of"]

logger = logging.getLogger(__name__)

_LOST_WORKER = frozenset({"KilledWorker", "CommClosedError"})
# What distributed sets on a future it cancelled; its ``reason`` says why.
_CANCELLED_FUTURE = "FutureCancelledError"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the engine applies and journals for one failed attempt."""

    diagnosis: Diagnosis
    decision: RetryDecision
    evidence: Evidence
    job_id: str | None = None
    exclude_nodes: frozenset[str] = frozenset()
    time: float | None = None
    """When the failure was handled: the end of an attempt whose worker died with it."""
    site: str | None = None
    """The site of ``job_id`` (job ids repeat across sites)."""

    @property
    def record(self) -> dict[str, Any]:
        """The attempt's journal fields this failure knows."""
        return {
            "end": self.time if self.evidence.worker_lost else None,
            "exit_code": self.evidence.exit_code,
            "failure_class": str(self.diagnosis.failure),
            "node": self.evidence.node,
            "job_id": self.job_id,
            "site": self.site,
            "message": self.diagnosis.reason[:500],
        }


def _lost_worker_address(exc: BaseException | None) -> str | None:
    worker = getattr(exc, "last_worker", None)
    address = getattr(worker, "address", None)
    return str(address) if address else None


def evidence_of(
    exc: BaseException | None,
    *,
    memory_requested: int = 0,
    cancel_requested: bool = False,
    node: str | None = None,
    node_healthy: bool | None = None,
    allocation_state: str | None = None,
    allocation_reason: str | None = None,
) -> Evidence:
    """Evidence from the exception Dask gave for an attempt, plus what the monitor knows."""
    name = type(exc).__name__ if exc is not None else None
    lost = name in _LOST_WORKER
    # A future cancelled by distributed, not by the run: the driver's client lost the
    # scheduler (``scheduler-connection-lost``) and the attempt with it.
    disconnected = (
        name == _CANCELLED_FUTURE
        and not cancel_requested
        and getattr(exc, "reason", None) == reconnect.LOST
    )
    failed = exc if isinstance(exc, TaskFailed) else None
    qualified = f"{type(exc).__module__}.{name}" if exc is not None and failed is None else None
    return Evidence(
        # Only a lost worker ties the attempt to its allocation's fate.
        slurm_state=allocation_state if lost else None,
        slurm_reason=allocation_reason if lost else None,
        scope="allocation" if lost and allocation_state else "task",
        cancel_requested=cancel_requested,
        scheduler_connection_lost=disconnected,
        exit_code=failed.exit_code if failed else None,
        signal=failed.signal if failed else None,
        exception_type=None if failed or lost else qualified,
        exception_message=str(exc) if exc is not None and not lost else None,
        walltime_killed=bool(failed and failed.timed_out),
        worker_lost=lost,
        memory_requested=memory_requested or None,
        memory_peak=failed.memory_peak if failed else None,
        node=(failed.node if failed and failed.node else None) or node,
        node_healthy=node_healthy,
    )


class Recovery:
    """The run's recovery state and the one entry point, :meth:`failed`."""

    def __init__(
        self,
        site: Site,
        *,
        monitor: Monitor | None = None,
        config: RetryConfig | None = None,
        policies: Policies | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site = site
        self.limits = site_limits(site)
        self.monitor = monitor
        self.policies = policies or Policies(retry_config=config or RetryConfig())
        self.config = self.policies.retry_config
        self.ledger: RetryLedger[str] = RetryLedger(self.policies)
        self._exclude: dict[str, frozenset[str]] = {}
        self._clock = clock

    @property
    def infrastructure_failures(self) -> int:
        return self.ledger.infrastructure_failures

    @property
    def strikes(self) -> list[NodeStrike]:
        return list(self.ledger.strikes)

    def failed(
        self,
        task: TaskSpec,
        n: int,
        exc: BaseException | None,
        request: Resources,
        *,
        partition: str | None = None,
        cancel_requested: bool = False,
    ) -> Outcome:
        """Classify attempt ``n`` of ``task`` that raised ``exc`` and decide its retry."""
        now = self._clock()
        node, job_id, site, healthy, state, reason = self._monitor_view(exc)
        evidence = evidence_of(
            exc,
            memory_requested=request.memory,
            cancel_requested=cancel_requested,
            node=node,
            node_healthy=healthy,
            allocation_state=state,
            allocation_reason=reason,
        )
        if evidence.node and self.monitor is not None and evidence.node != node:
            evidence = replace(evidence, node_healthy=self.monitor.node_healthy(evidence.node))
        diagnosis = self.policies.diagnose(evidence)
        decision, struck = self.ledger.failed(
            task.id,
            TaskInfo(
                id=task.id,
                resources=policy_resources(task),
                retries=task.retries,
                partition=partition,
                estimate_s=task.estimate,
            ),
            Attempt(
                n=n,
                resources=request,
                failure=diagnosis.failure,
                node=evidence.node,
                memory_peak=evidence.memory_peak,
                scope=diagnosis.scope,
            ),
            diagnosis,
            self.limits,
            now=now,
            unhealthy=self.monitor.unhealthy_nodes() if self.monitor else frozenset(),
        )
        exclude = self._exclude.get(task.id, frozenset())
        if decision.exclude_nodes or struck:
            exclude = self._exclude[task.id] = exclude | decision.exclude_nodes | struck
        return Outcome(diagnosis, decision, evidence, job_id, exclude, now, site)

    def excluded(self, task_id: str) -> frozenset[str]:
        return self._exclude.get(task_id, frozenset())

    def allowed_workers(self, task_id: str) -> list[str] | None:
        """Live workers not on the task's excluded nodes; None when the task may go anywhere.

        With every live worker excluded (all on excluded nodes), None as well: the
        excluded node's workers died with it, and a worker that joins later is new.
        """
        exclude = self.excluded(task_id)
        if not exclude or self.monitor is None:
            return None
        # Not a worker whose allocation is ending (Slurm requeues or ends a multi-node job
        # whose other node failed; its worker on a healthy node goes with it): a task held
        # to a worker that dies waits for it forever.
        live = [w for w in self.monitor.live_workers() if not self._ending(w)]
        allowed = [w.address for w in live if w.node is not None and w.node not in exclude]
        if not allowed:
            logger.warning(
                "task %s avoids %s but no other worker is up yet; it may go to any worker",
                task_id,
                ", ".join(sorted(exclude)),
            )
            return None
        return allowed

    def _ending(self, worker: WorkerInfo) -> bool:
        """Whether Slurm last listed the worker's allocation as anything but running."""
        if self.monitor is None or not worker.job_id or not self.monitor.follows(worker.site):
            return False
        job = self.monitor.allocation(worker.job_id)
        return job is not None and job.state is not JobState.RUNNING

    def _monitor_view(
        self, exc: BaseException | None
    ) -> tuple[str | None, str | None, str | None, bool | None, str | None, str | None]:
        """(node, job id, its site, node healthy, allocation state, reason) of the worker."""
        if self.monitor is None:
            return None, None, None, None, None, None
        address = _lost_worker_address(exc)
        worker = self.monitor.worker(address) if address else None
        if worker is None:
            return None, None, None, None, None, None
        if not self.monitor.follows(worker.site):
            # another site's worker: its job and node are not in this monitor's Slurm
            return worker.node, worker.job_id, worker.site, None, None, None
        state = reason = None
        node = worker.node
        healthy = self.monitor.node_healthy(node)
        if worker.job_id:
            job = self.monitor.refresh(worker.job_id)
            if job is not None and job.terminal:
                state, reason = job.state.value, job.reason
            if healthy is not False:
                # A multi-node job (an MPI step, a training) dies with any of its nodes
                # (Slurm then lists it without that node, or requeues it with none):
                # the node to blame is the one that is down, not this worker's (rank 0's).
                nodes = self.monitor.job_nodes(worker.job_id)
                down = [n for n in nodes if self.monitor.node_healthy(n) is False]
                if down:
                    node, healthy = down[0], False
        return node, worker.job_id, worker.site, healthy, state, reason

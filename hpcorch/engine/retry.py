"""The engine's seam to the failure policy: diagnose an attempt, decide its retry.

Classification is :func:`hpcorch.failures.diagnose` and the decision is
:func:`hpcorch.policies.retry.decide_retry` (the simulator calls the same
two); this module only translates what the engine knows (an exception, a
:class:`~hpcorch.spec.TaskSpec`, past attempts) into their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hpcorch.failures import Diagnosis, Evidence, FailureClass, diagnose
from hpcorch.policies.retry import RetryConfig, RetryDecision, decide_retry
from hpcorch.policies.state import Attempt, Resources, SiteLimits, TaskInfo
from hpcorch.spec import TaskSpec

__all__ = [
    "Attempt",
    "Diagnosis",
    "Resources",
    "RetryConfig",
    "RetryDecision",
    "TaskFailed",
    "decide",
    "diagnose_exception",
    "policy_resources",
]

_LOST_WORKER = ("KilledWorker", "CommClosedError")


class TaskFailed(Exception):
    """A command attempt that ended badly: its exit code or signal, or its walltime ran out.

    ``memory_peak`` is the peak RSS of the command's process tree (bytes), ``node``
    where it ran: evidence for :mod:`hpcorch.engine.recovery`.
    """

    def __init__(
        self,
        message: str,
        exit_code: int | None = None,
        signal: int | None = None,
        timed_out: bool = False,
        memory_peak: int | None = None,
        node: str | None = None,
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.signal = signal
        self.timed_out = timed_out
        self.memory_peak = memory_peak
        self.node = node

    def __reduce__(self) -> tuple[object, ...]:
        args = (str(self), self.exit_code, self.signal, self.timed_out, self.memory_peak, self.node)
        return (TaskFailed, args)


def diagnose_exception(
    exc: BaseException | None,
    *,
    node: str | None = None,
    memory_requested: int | None = None,
    cancel_requested: bool = False,
) -> Diagnosis:
    """Why an attempt failed, from the exception Dask reported for it."""
    if isinstance(exc, TaskFailed) and exc.timed_out:
        return Diagnosis(FailureClass.TIMEOUT, "walltime", str(exc), scope="task")
    name = type(exc).__name__ if exc is not None else None
    qualified = f"{type(exc).__module__}.{name}" if exc is not None else None
    evidence = Evidence(
        cancel_requested=cancel_requested,
        exit_code=exc.exit_code if isinstance(exc, TaskFailed) else None,
        signal=exc.signal if isinstance(exc, TaskFailed) else None,
        exception_type=None if isinstance(exc, TaskFailed) else qualified,
        exception_message=str(exc) if exc is not None else None,
        worker_lost=name in _LOST_WORKER,
        memory_requested=memory_requested or None,
        node=node,
    )
    return diagnose(evidence)


def policy_resources(task: TaskSpec) -> Resources:
    """A task's request in the policy's terms (per node)."""
    return Resources(
        cpus=task.cpus,
        memory=task.resources.memory,
        gpus=math.ceil(task.gpus),
        walltime_s=task.resources.walltime,
        nodes=task.nodes,
    )


def decide(
    task: TaskSpec,
    partition: str | None,
    attempts: Sequence[Attempt],
    failure: Diagnosis,
    limits: SiteLimits,
    *,
    run_infrastructure_failures: int = 0,
    config: RetryConfig | None = None,
) -> RetryDecision:
    """Whether and how to try ``task`` again after the last of ``attempts`` failed."""
    info = TaskInfo(
        id=task.id,
        resources=policy_resources(task),
        retries=task.retries,
        partition=partition,
        estimate_s=task.estimate,
    )
    return decide_retry(
        info,
        attempts,
        failure,
        limits,
        run_infrastructure_failures=run_infrastructure_failures,
        config=config or RetryConfig(),
    )

"""The engine's words for the failure policy: a worker's failure report, a task's request.

:class:`TaskFailed` is what a worker raises for a command that ended badly;
:func:`policy_resources` is a :class:`~hpcorch.spec.TaskSpec`'s request in the
policy's terms. Classification (:func:`hpcorch.failures.diagnose`) and the
decision (:func:`hpcorch.policies.retry.decide_retry`, the simulator calls the
same) are applied by :mod:`hpcorch.engine.recovery`, with the monitor's evidence.
"""

from __future__ import annotations

import math

from hpcorch.failures import Diagnosis
from hpcorch.policies.retry import RetryConfig, RetryDecision
from hpcorch.policies.state import Attempt, Resources
from hpcorch.spec import TaskSpec

__all__ = [
    "Attempt",
    "Diagnosis",
    "Resources",
    "RetryConfig",
    "RetryDecision",
    "TaskFailed",
    "policy_resources",
]


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


def policy_resources(task: TaskSpec) -> Resources:
    """A task's request in the policy's terms (per node)."""
    return Resources(
        cpus=task.cpus,
        memory=task.resources.memory,
        gpus=math.ceil(task.gpus),
        walltime_s=task.resources.walltime,
        nodes=task.nodes,
    )

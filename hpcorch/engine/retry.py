"""Whether a failed attempt is tried again: the one call the engine makes.

The failure classification and remedies (bigger memory after OOM, longer
walltime after a timeout, another node after a node failure) belong to
:mod:`hpcorch.policies.retry`; until it exists this keeps the documented
rule: infrastructure failures do not use up a task's retries.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpcorch.spec import TaskSpec

__all__ = ["INFRA_CLASSES", "MAX_INFRA_RETRIES", "RetryDecision", "decide"]

INFRA_CLASSES = frozenset({"node_failure", "preempted", "infrastructure"})
MAX_INFRA_RETRIES = 3


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    reason: str


def decide(task: TaskSpec, failures: list[str]) -> RetryDecision:
    """Decide from the failure classes of this task's attempts so far (latest last)."""
    last = failures[-1]
    if last == "cancelled":
        return RetryDecision(False, "cancelled")
    infra = sum(1 for f in failures if f in INFRA_CLASSES)
    own = len(failures) - infra
    if last in INFRA_CLASSES:
        if infra <= MAX_INFRA_RETRIES:
            return RetryDecision(True, f"{last}; does not count against retries")
        return RetryDecision(False, f"{infra} infrastructure failures")
    if own <= task.retries:
        return RetryDecision(True, f"{last}; retry {own} of {task.retries}")
    return RetryDecision(False, f"{last}; no retries left ({task.retries})")

"""What to do after a failed attempt: one remedy per failure class.

:func:`decide_retry` is pure: the task, its attempts, the diagnosis of the
failed one (:func:`hpcorch.failures.diagnose`), the site's limits and node
health in; a :class:`RetryDecision` out. The engine journals the decision and
acts on it; the simulator calls the same function.

==============  ==========================================================  ======
class           remedy                                                      budget
==============  ==========================================================  ======
out_of_memory   more memory: max(request x ``memory_factor``, peak x        no
                ``memory_headroom``), capped by the partition's largest
                node; give up once a request at the cap fails
timeout         longer walltime (x ``walltime_factor``) within the          no
                partition's limit; give up once a request at the limit
                fails. When the *allocation* reached its walltime under a
                task that was within its own, requeue unchanged
node_failure    rerun elsewhere: exclude the node for this task (and the    no
                nodes struck for everyone); strike the node
                (:func:`struck_nodes`) unless the monitor saw it healthy;
                give up after ``max_node_failures``
preempted       requeue at once, up to ``max_requeues``                     no
cancelled       no retry, unless it was the allocation under the task       no
                that was cancelled (not the run): then requeue
infrastructure  retry with exponential backoff (``infra_backoff_s``, capped  no
                at ``infra_backoff_max_s``), at most
                ``max_infrastructure_retries`` per task and
                ``max_run_infrastructure_failures`` per run
scheduler_      resubmit at once (the attempt was lost with the driver's    no
connection_     connection to the Dask scheduler, not by the task), at
lost            most ``max_connection_losses`` per task
user_error      retry up to the task's ``retries``, backoff                 yes
                ``user_backoff_s`` x 2^k capped at ``user_backoff_max_s``
==============  ==========================================================  ======

Only user errors use the task's ``retries``; the other classes are bounded by
their own limits, so none can loop for ever. When the decision is to give up,
``reason`` says what to change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import assert_never

from hpcorch.failures import Diagnosis, FailureClass
from hpcorch.policies.state import (
    Attempt,
    NodeHealth,
    PartitionLimits,
    Resources,
    SiteLimits,
    TaskInfo,
)
from hpcorch.units import format_duration

__all__ = ["NodeStrike", "RetryConfig", "RetryDecision", "decide_retry", "struck_nodes"]

_MIB = 1024**2
_HEALTHY = NodeHealth()


@dataclass(frozen=True, slots=True)
class RetryConfig:
    memory_factor: float = 1.5
    memory_headroom: float = 1.2
    """Multiplier on an observed peak, when one is known."""
    walltime_factor: float = 2.0
    user_backoff_s: float = 10.0
    user_backoff_max_s: float = 600.0
    infra_backoff_s: float = 15.0
    infra_backoff_max_s: float = 300.0
    max_infrastructure_retries: int = 10
    max_run_infrastructure_failures: int = 100
    max_node_failures: int = 3
    max_requeues: int = 20
    """Preemptions and allocations lost under the task, per task."""
    max_connection_losses: int = 10
    """Attempts of one task lost with the driver's connection to the Dask scheduler: a
    connection that keeps dropping fails the task instead of resubmitting it for ever."""
    strike_threshold: int = 3
    """Distinct tasks that must lose a node within ``strike_window_s`` to strike it for everyone."""
    strike_window_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.memory_factor <= 1 or self.walltime_factor <= 1:
            raise ValueError("memory_factor and walltime_factor must be above 1")
        if self.strike_threshold < 1:
            raise ValueError("strike_threshold must be at least 1")


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    failure: FailureClass
    resources: Resources
    """What the next attempt asks for (unchanged when not retrying)."""
    delay_s: float = 0.0
    exclude_nodes: frozenset[str] = frozenset()
    counts_against_budget: bool = False
    strike_node: str | None = None
    """Node to record in the strike table (:class:`NodeStrike`): only when the evidence
    points at the node itself (``Diagnosis.strike``), not at a worker lost on a healthy node."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NodeStrike:
    """One node failure a task suffered, for the run-wide strike table."""

    node: str
    task: str
    time: float


def struck_nodes(
    strikes: Iterable[NodeStrike], now: float, config: RetryConfig = RetryConfig()
) -> frozenset[str]:
    """Nodes lost by ``strike_threshold`` distinct tasks within the window: excluded for all."""
    since = now - config.strike_window_s
    tasks: dict[str, set[str]] = {}
    for strike in strikes:
        if since <= strike.time <= now:
            tasks.setdefault(strike.node, set()).add(strike.task)
    return frozenset(node for node, ts in tasks.items() if len(ts) >= config.strike_threshold)


def decide_retry(
    task: TaskInfo,
    attempts: Sequence[Attempt],
    failure: Diagnosis,
    site_limits: SiteLimits,
    node_health: NodeHealth = _HEALTHY,
    *,
    run_infrastructure_failures: int = 0,
    config: RetryConfig = RetryConfig(),
) -> RetryDecision:
    """Decide the retry of ``task`` after its last attempt failed as ``failure`` says.

    ``attempts`` are the task's attempts in order, the failed one last (its own
    ``failure`` field is ignored in favour of ``failure``).
    ``run_infrastructure_failures`` counts the run's infrastructure failures so
    far, this one included.
    """
    previous = attempts[:-1]
    last = attempts[-1] if attempts else Attempt(n=1, resources=task.resources)
    partition = site_limits.partition(task.partition)
    cls = failure.failure
    # Every class has its own remedy: a new class fails type checking here until it has one.
    match cls:
        case FailureClass.USER_ERROR:
            return _user_error(task, previous, last, failure, config)
        case FailureClass.OUT_OF_MEMORY:
            return _out_of_memory(last, failure, partition, config)
        case FailureClass.TIMEOUT:
            return _timeout(previous, last, failure, partition, config)
        case FailureClass.NODE_FAILURE:
            return _node_failure(
                attempts, last, failure, partition, health=node_health, config=config
            )
        case FailureClass.PREEMPTED:
            return _requeue(previous, last, failure, "preempted", config)
        case FailureClass.CANCELLED:
            if failure.scope == "allocation":
                return _requeue(previous, last, failure, "its allocation was cancelled", config)
            reason = f"{failure.reason}; cancelled tasks are not retried"
            return RetryDecision(False, cls, last.resources, reason=reason)
        case FailureClass.INFRASTRUCTURE:
            return _infrastructure(attempts, last, failure, run_infrastructure_failures, config)
        case FailureClass.SCHEDULER_CONNECTION_LOST:
            return _connection_lost(previous, last, failure, config)
        case _:
            assert_never(cls)


def _backoff(base: float, cap: float, k: int) -> float:
    return float(min(cap, base * 2 ** min(k, 32)))


def _user_error(
    task: TaskInfo,
    previous: Sequence[Attempt],
    last: Attempt,
    failure: Diagnosis,
    config: RetryConfig,
) -> RetryDecision:
    used = sum(a.failure is FailureClass.USER_ERROR for a in previous)
    if used < task.retries:
        delay = _backoff(config.user_backoff_s, config.user_backoff_max_s, used)
        return RetryDecision(
            True,
            failure.failure,
            last.resources,
            delay_s=delay,
            counts_against_budget=True,
            reason=f"{failure.reason}; retry {used + 1} of {task.retries} in {delay:.0f}s",
        )
    return RetryDecision(
        False,
        failure.failure,
        last.resources,
        counts_against_budget=True,
        reason=(
            f"{failure.reason}; gave up after {used + 1} user-error attempt(s) "
            f"(retries: {task.retries}): fix the error (see `hpcorch logs RUN {task.id}`), "
            "or raise the task's `retries` if it fails only sometimes"
        ),
    )


def _out_of_memory(
    last: Attempt, failure: Diagnosis, partition: PartitionLimits | None, config: RetryConfig
) -> RetryDecision:
    res = last.resources
    cap = partition.memory_per_node if partition else None
    base = res.memory
    if base <= 0 and last.memory_peak:
        base = last.memory_peak
    elif base <= 0 and partition is not None:
        # the partition default: assume the task's share of the node's memory
        base = partition.memory_per_node * min(res.cpus, partition.cores_per_node)
        base //= max(1, partition.cores_per_node)
    wanted = max(base * config.memory_factor, (last.memory_peak or 0) * config.memory_headroom)
    new = -(-int(wanted) // _MIB) * _MIB  # whole MiB, rounded up
    if cap is not None:
        new = min(new, cap)
    if new <= base:
        where = f"partition {partition.name}'s " if partition else "the "
        limit = f" ({cap // _MIB} MiB)" if cap else ""
        return RetryDecision(
            False,
            failure.failure,
            res,
            reason=(
                f"{failure.reason}; already asked for {where}largest node memory{limit}: "
                "reduce the task's memory use or split it, or run it in a partition with "
                "larger nodes"
            ),
        )
    return RetryDecision(
        True,
        failure.failure,
        replace(res, memory=new),
        reason=f"{failure.reason}; retry with {new // _MIB} MiB (was {base // _MIB} MiB)",
    )


def _timeout(
    previous: Sequence[Attempt],
    last: Attempt,
    failure: Diagnosis,
    partition: PartitionLimits | None,
    config: RetryConfig,
) -> RetryDecision:
    res = last.resources
    elapsed = (last.end - last.start) if last.end is not None and last.start is not None else None
    own_limit = res.walltime_s
    if failure.scope == "allocation" and (
        own_limit is None or elapsed is None or elapsed < own_limit
    ):
        return _requeue(
            previous, last, failure, "its allocation reached its walltime under it", config
        )
    base = own_limit if own_limit is not None else (elapsed or 0.0)
    cap = partition.max_walltime_s if partition else None
    if base <= 0 and cap is None:
        return RetryDecision(
            False,
            failure.failure,
            res,
            reason=(
                f"{failure.reason}; its walltime is unknown: give the task "
                "`resources: {walltime: ...}` longer than it needs"
            ),
        )
    # unknown walltime (the partition default): go to the partition's limit
    new = base * config.walltime_factor if base > 0 else math.inf
    if cap is not None:
        new = min(new, cap)
    if new <= base:
        where = f"partition {partition.name}'s" if partition else "the"
        limit = f" ({format_duration(cap)})" if cap is not None else ""
        return RetryDecision(
            False,
            failure.failure,
            res,
            reason=(
                f"{failure.reason}; already at {where} longest walltime{limit}: checkpoint and "
                "split the task, or run it in a partition or QOS with a longer limit"
            ),
        )
    return RetryDecision(
        True,
        failure.failure,
        replace(res, walltime_s=new),
        reason=(
            f"{failure.reason}; retry with walltime {format_duration(new)} "
            f"(was {format_duration(base)})"
        ),
    )


def _node_failure(
    attempts: Sequence[Attempt],
    last: Attempt,
    failure: Diagnosis,
    partition: PartitionLimits | None,
    *,
    health: NodeHealth,
    config: RetryConfig,
) -> RetryDecision:
    previous = attempts[:-1]
    own = {a.node for a in previous if a.failure is FailureClass.NODE_FAILURE and a.node}
    node = failure.node or last.node
    if node:
        own.add(node)
    strike = node if failure.strike else None
    lost = sum(a.failure is FailureClass.NODE_FAILURE for a in previous) + 1
    exclude = frozenset(own) | health.struck
    if lost >= config.max_node_failures:
        nodes = ", ".join(sorted(own)) or "unknown nodes"
        return RetryDecision(
            False,
            failure.failure,
            last.resources,
            exclude_nodes=exclude,
            strike_node=strike,
            reason=(
                f"{failure.reason}; lost its node {lost} times ({nodes}): if the task itself "
                "brings nodes down (memory, GPU, disk), fix that; otherwise raise "
                "max_node_failures or report the nodes to the site"
            ),
        )
    if partition is not None and len(exclude) >= partition.nodes:
        return RetryDecision(
            False,
            failure.failure,
            last.resources,
            exclude_nodes=exclude,
            strike_node=strike,
            reason=(
                f"{failure.reason}; every node of partition {partition.name} is excluded: "
                "report the nodes to the site, or run the task in another partition"
            ),
        )
    return RetryDecision(
        True,
        failure.failure,
        last.resources,
        exclude_nodes=exclude,
        strike_node=strike,
        reason=f"{failure.reason}; rerun elsewhere, excluding {', '.join(sorted(exclude)) or '-'}",
    )


def _requeues(attempts: Iterable[Attempt]) -> int:
    return sum(
        a.failure is FailureClass.PREEMPTED
        or (a.scope == "allocation" and a.failure in (FailureClass.CANCELLED, FailureClass.TIMEOUT))
        for a in attempts
    )


def _requeue(
    previous: Sequence[Attempt],
    last: Attempt,
    failure: Diagnosis,
    what: str,
    config: RetryConfig,
) -> RetryDecision:
    count = _requeues(previous) + 1
    if count > config.max_requeues:
        return RetryDecision(
            False,
            failure.failure,
            last.resources,
            reason=(
                f"{failure.reason}; requeued {count - 1} times already: run it in a partition "
                "or QOS without preemption, or raise max_requeues"
            ),
        )
    return RetryDecision(
        True, failure.failure, last.resources, reason=f"{failure.reason}; {what}: requeued"
    )


def _connection_lost(
    previous: Sequence[Attempt], last: Attempt, failure: Diagnosis, config: RetryConfig
) -> RetryDecision:
    count = sum(a.failure is FailureClass.SCHEDULER_CONNECTION_LOST for a in previous) + 1
    if count > config.max_connection_losses:
        return RetryDecision(
            False,
            failure.failure,
            last.resources,
            reason=(
                f"{failure.reason}; lost {count} attempts this way: check the network between "
                "the driver and the scheduler (`hpcorch doctor`), then `hpcorch resume RUN`"
            ),
        )
    return RetryDecision(
        True,
        failure.failure,
        last.resources,
        reason=f"{failure.reason}; resubmitted (does not use the task's retries)",
    )


def _infrastructure(
    attempts: Sequence[Attempt],
    last: Attempt,
    failure: Diagnosis,
    run_failures: int,
    config: RetryConfig,
) -> RetryDecision:
    previous = attempts[:-1]
    streak = 1
    for attempt in reversed(previous):
        if attempt.failure is not FailureClass.INFRASTRUCTURE:
            break
        streak += 1
    total = sum(a.failure is FailureClass.INFRASTRUCTURE for a in previous) + 1
    if run_failures >= config.max_run_infrastructure_failures:
        return RetryDecision(
            False,
            failure.failure,
            last.resources,
            reason=(
                f"{failure.reason}; Slurm failed {run_failures} times in this run: check the "
                "site with `hpcorch doctor --site SITE`, then `hpcorch resume RUN`"
            ),
        )
    if total > config.max_infrastructure_retries:
        return RetryDecision(
            False,
            failure.failure,
            last.resources,
            reason=(
                f"{failure.reason}; failed {total} times for infrastructure reasons: check "
                "the site with `hpcorch doctor --site SITE`, then `hpcorch resume RUN`"
            ),
        )
    delay = _backoff(config.infra_backoff_s, config.infra_backoff_max_s, streak - 1)
    return RetryDecision(
        True,
        failure.failure,
        last.resources,
        delay_s=delay,
        reason=f"{failure.reason}; retry in {delay:.0f}s (does not use the task's retries)",
    )

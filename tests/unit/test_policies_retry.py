"""Retry remedies per failure class (hpcorch.policies.retry)."""

from __future__ import annotations

import pytest

from hpcorch.failures import Diagnosis, Evidence, FailureClass, diagnose
from hpcorch.policies.retry import NodeStrike, RetryConfig, decide_retry, struck_nodes
from hpcorch.policies.state import (
    Attempt,
    NodeHealth,
    PartitionLimits,
    Resources,
    SiteLimits,
    TaskInfo,
)

GIB = 1024**3
MIB = 1024**2
F = FailureClass
LIMITS = SiteLimits(
    site="dev",
    partitions=(
        PartitionLimits(
            "cpu", nodes=2, cores_per_node=8, memory_per_node=8000 * MIB, max_walltime_s=4 * 3600
        ),
        PartitionLimits(
            "gpu",
            nodes=2,
            cores_per_node=8,
            memory_per_node=7000 * MIB,
            gpus_per_node=4,
            max_walltime_s=3600,
        ),
    ),
    max_submit_jobs=10,
)


def task(retries: int = 0, **res: object) -> TaskInfo:
    resources = Resources(**{"cpus": 1, "memory": GIB, "walltime_s": 600.0, **res})  # type: ignore[arg-type]
    return TaskInfo(id="t", resources=resources, retries=retries, partition="cpu")


def attempts(t: TaskInfo, *failures: FailureClass | None, **last: object) -> list[Attempt]:
    out = [Attempt(n=i + 1, resources=t.resources, failure=f) for i, f in enumerate(failures)]
    out[-1] = Attempt(n=len(out), resources=t.resources, failure=failures[-1], **last)  # type: ignore[arg-type]
    return out


def diag(cls: FailureClass, **kw: object) -> Diagnosis:
    return Diagnosis(cls, "test", f"it failed ({cls})", **kw)  # type: ignore[arg-type]


# --- user errors: the only class that uses the budget -----------------------------------------


def test_user_error_retries_with_exponential_backoff_then_gives_up() -> None:
    t = task(retries=3)
    history: list[FailureClass | None] = []
    delays = []
    for _ in range(3):
        history.append(F.USER_ERROR)
        decision = decide_retry(t, attempts(t, *history), diag(F.USER_ERROR), LIMITS)
        assert decision.retry and decision.counts_against_budget
        delays.append(decision.delay_s)
    assert delays == [10.0, 20.0, 40.0]
    history.append(F.USER_ERROR)
    final = decide_retry(t, attempts(t, *history), diag(F.USER_ERROR), LIMITS)
    assert not final.retry
    assert "hpcorch logs RUN t" in final.reason and "retries" in final.reason


def test_user_error_with_no_retries_gives_up_at_once() -> None:
    t = task(retries=0)
    decision = decide_retry(t, attempts(t, F.USER_ERROR), diag(F.USER_ERROR), LIMITS)
    assert not decision.retry
    assert "gave up after 1" in decision.reason


def test_user_backoff_is_capped() -> None:
    t = task(retries=30)
    history = [F.USER_ERROR] * 20
    decision = decide_retry(t, attempts(t, *history), diag(F.USER_ERROR), LIMITS)
    assert decision.retry and decision.delay_s == RetryConfig().user_backoff_max_s


def test_other_classes_do_not_use_the_budget() -> None:
    t = task(retries=1)
    history = [F.PREEMPTED, F.INFRASTRUCTURE, F.NODE_FAILURE, F.OUT_OF_MEMORY, F.USER_ERROR]
    decision = decide_retry(t, attempts(t, *history), diag(F.USER_ERROR), LIMITS)
    assert decision.retry  # the one user error before is the only one counted


# --- out of memory -----------------------------------------------------------------------------


def test_oom_retries_with_more_memory_capped_by_the_node() -> None:
    t = task(memory=3 * GIB)
    memories = []
    for _ in range(3):
        decision = decide_retry(t, attempts(t, F.OUT_OF_MEMORY), diag(F.OUT_OF_MEMORY), LIMITS)
        assert decision.retry and not decision.counts_against_budget
        memories.append(decision.resources.memory // MIB)
        t = TaskInfo(id="t", resources=decision.resources, partition="cpu")
    assert memories == [4608, 6912, 8000]  # x1.5, x1.5, then the node's 8000 MiB
    final = decide_retry(t, attempts(t, F.OUT_OF_MEMORY), diag(F.OUT_OF_MEMORY), LIMITS)
    assert not final.retry
    assert "8000 MiB" in final.reason and "partition cpu" in final.reason
    assert "larger nodes" in final.reason


def test_oom_uses_the_observed_peak_when_larger() -> None:
    t = task(memory=GIB)
    history = attempts(t, F.OUT_OF_MEMORY, memory_peak=3 * GIB)
    decision = decide_retry(t, history, diag(F.OUT_OF_MEMORY), LIMITS)
    assert decision.resources.memory == -(-int(3.6 * GIB) // MIB) * MIB


def test_oom_with_partition_default_memory_takes_a_share_of_the_node() -> None:
    t = task(memory=0, cpus=2)
    decision = decide_retry(t, attempts(t, F.OUT_OF_MEMORY), diag(F.OUT_OF_MEMORY), LIMITS)
    assert decision.retry and decision.resources.memory == 3000 * MIB  # 2/8 of 8000 MiB x 1.5


def test_oom_memory_factor_is_configurable() -> None:
    t = task(memory=GIB)
    config = RetryConfig(memory_factor=2.0)
    decision = decide_retry(
        t, attempts(t, F.OUT_OF_MEMORY), diag(F.OUT_OF_MEMORY), LIMITS, config=config
    )
    assert decision.resources.memory == 2 * GIB


# --- timeout -----------------------------------------------------------------------------------


def test_timeout_doubles_walltime_within_the_partition_limit() -> None:
    t = task(walltime_s=3 * 3600.0)
    decision = decide_retry(t, attempts(t, F.TIMEOUT), diag(F.TIMEOUT), LIMITS)
    assert decision.retry and decision.resources.walltime_s == 4 * 3600
    assert not decision.counts_against_budget
    t2 = TaskInfo(id="t", resources=decision.resources, partition="cpu")
    final = decide_retry(t2, attempts(t2, F.TIMEOUT), diag(F.TIMEOUT), LIMITS)
    assert not final.retry
    assert "04:00:00" in final.reason and "split" in final.reason


def test_timeout_without_walltime_uses_elapsed_time() -> None:
    t = task(walltime_s=None)
    history = attempts(t, F.TIMEOUT, start=100.0, end=700.0)
    decision = decide_retry(t, history, diag(F.TIMEOUT), LIMITS)
    assert decision.resources.walltime_s == 1200.0


def test_timeout_with_unknown_walltime_goes_to_the_partition_limit() -> None:
    t = task(walltime_s=None)
    decision = decide_retry(t, attempts(t, F.TIMEOUT), diag(F.TIMEOUT), LIMITS)
    assert decision.retry and decision.resources.walltime_s == 4 * 3600
    nowhere = SiteLimits("x", ())
    decision = decide_retry(t, attempts(t, F.TIMEOUT), diag(F.TIMEOUT), nowhere)
    assert not decision.retry and "walltime" in decision.reason


def test_allocation_walltime_under_a_task_requeues_it_unchanged() -> None:
    t = task(walltime_s=600.0)
    history = attempts(t, F.TIMEOUT, start=0.0, end=300.0, scope="allocation")
    decision = decide_retry(t, history, diag(F.TIMEOUT, scope="allocation"), LIMITS)
    assert decision.retry and decision.resources == t.resources
    assert "requeued" in decision.reason


# --- node failure ------------------------------------------------------------------------------


def test_node_failure_excludes_the_node_and_strikes_it() -> None:
    t = task(retries=0)
    decision = decide_retry(
        t,
        attempts(t, F.NODE_FAILURE, node="cpu1"),
        diag(F.NODE_FAILURE, node="cpu1", strike=True),
        LIMITS,
    )
    assert decision.retry and not decision.counts_against_budget
    assert decision.exclude_nodes == {"cpu1"}
    assert decision.strike_node == "cpu1"


def test_worker_lost_on_a_healthy_node_excludes_but_does_not_strike() -> None:
    t = task()
    evidence = Evidence(worker_lost=True, node="cpu1", node_healthy=True)
    decision = decide_retry(t, attempts(t, F.NODE_FAILURE, node="cpu1"), diagnose(evidence), LIMITS)
    assert decision.retry and decision.exclude_nodes == {"cpu1"}
    assert decision.strike_node is None


def test_node_failure_excludes_struck_nodes_and_gives_up_when_none_left() -> None:
    t = task()
    health = NodeHealth(struck=frozenset({"cpu2"}))
    decision = decide_retry(
        t,
        attempts(t, F.NODE_FAILURE, node="cpu1"),
        diag(F.NODE_FAILURE, node="cpu1"),
        LIMITS,
        health,
    )
    assert not decision.retry
    assert decision.exclude_nodes == {"cpu1", "cpu2"}
    assert "every node of partition cpu" in decision.reason


def test_node_failure_gives_up_after_max_node_failures() -> None:
    t = TaskInfo(id="t", resources=Resources(), partition=None)
    limits = SiteLimits("big", (PartitionLimits("p", 100, 8, 8 * GIB),))
    history = [
        Attempt(1, t.resources, F.NODE_FAILURE, node="n1"),
        Attempt(2, t.resources, F.NODE_FAILURE, node="n2"),
        Attempt(3, t.resources, F.NODE_FAILURE, node="n3"),
    ]
    decision = decide_retry(t, history, diag(F.NODE_FAILURE, node="n3"), limits)
    assert not decision.retry
    assert "3 times (n1, n2, n3)" in decision.reason


def test_struck_nodes_needs_distinct_tasks_within_the_window() -> None:
    strikes = [
        NodeStrike("cpu1", "a", 100.0),
        NodeStrike("cpu1", "a", 110.0),
        NodeStrike("cpu1", "b", 120.0),
        NodeStrike("cpu2", "a", 0.0),
        NodeStrike("cpu2", "b", 4000.0),
        NodeStrike("cpu2", "c", 4100.0),
    ]
    assert struck_nodes(strikes, now=130.0) == frozenset()
    assert struck_nodes([*strikes, NodeStrike("cpu1", "c", 125.0)], now=130.0) == {"cpu1"}
    # cpu2's first strike is out of the window by then
    assert struck_nodes(strikes, now=4200.0) == frozenset()
    assert struck_nodes(strikes, now=4200.0, config=RetryConfig(strike_threshold=2)) == {"cpu2"}


# --- preemption, cancellation, infrastructure --------------------------------------------------


def test_preempted_requeues_at_once_without_budget_up_to_a_cap() -> None:
    t = task(retries=0)
    decision = decide_retry(t, attempts(t, F.PREEMPTED), diag(F.PREEMPTED), LIMITS)
    assert decision.retry and decision.delay_s == 0 and not decision.counts_against_budget
    many = [F.PREEMPTED] * 21
    final = decide_retry(t, attempts(t, *many), diag(F.PREEMPTED), LIMITS)
    assert not final.retry and "without preemption" in final.reason


def test_cancelled_task_is_not_retried() -> None:
    t = task(retries=5)
    decision = decide_retry(t, attempts(t, F.CANCELLED), diag(F.CANCELLED), LIMITS)
    assert not decision.retry and not decision.counts_against_budget


def test_cancelled_allocation_requeues_its_tasks() -> None:
    t = task(retries=0)
    evidence = Evidence(slurm_state="CANCELLED by 1000", owner_uid=1000, scope="allocation")
    decision = decide_retry(
        t, attempts(t, F.CANCELLED, scope="allocation"), diagnose(evidence), LIMITS
    )
    assert decision.retry and not decision.counts_against_budget


def test_infrastructure_backs_off_without_budget_and_is_bounded() -> None:
    t = task(retries=0)
    delays = []
    history: list[FailureClass | None] = []
    for _ in range(10):
        history.append(F.INFRASTRUCTURE)
        decision = decide_retry(t, attempts(t, *history), diag(F.INFRASTRUCTURE), LIMITS)
        assert decision.retry and not decision.counts_against_budget
        delays.append(decision.delay_s)
    assert delays[:4] == [15.0, 30.0, 60.0, 120.0]
    assert max(delays) == RetryConfig().infra_backoff_max_s
    history.append(F.INFRASTRUCTURE)
    final = decide_retry(t, attempts(t, *history), diag(F.INFRASTRUCTURE), LIMITS)
    assert not final.retry and "hpcorch doctor" in final.reason


def test_infrastructure_backoff_resets_after_other_failures() -> None:
    t = task(retries=3)
    history = [F.INFRASTRUCTURE, F.INFRASTRUCTURE, F.USER_ERROR, F.INFRASTRUCTURE]
    decision = decide_retry(t, attempts(t, *history), diag(F.INFRASTRUCTURE), LIMITS)
    assert decision.delay_s == 15.0


def test_scheduler_connection_lost_resubmits_at_once_without_budget_up_to_a_cap() -> None:
    t = task(retries=0)
    lost = F.SCHEDULER_CONNECTION_LOST
    decision = decide_retry(t, attempts(t, lost), diag(lost), LIMITS)
    assert decision.retry and decision.delay_s == 0 and not decision.counts_against_budget
    assert decide_retry(t, attempts(t, *[lost] * 10), diag(lost), LIMITS).retry
    final = decide_retry(t, attempts(t, *[lost] * 11), diag(lost), LIMITS)
    assert not final.retry and "resume" in final.reason


def test_infrastructure_global_cap() -> None:
    t = task()
    decision = decide_retry(
        t,
        attempts(t, F.INFRASTRUCTURE),
        diag(F.INFRASTRUCTURE),
        LIMITS,
        run_infrastructure_failures=100,
    )
    assert not decision.retry and "100 times in this run" in decision.reason


@pytest.mark.parametrize("cls", list(FailureClass))
def test_every_class_gives_a_reason(cls: FailureClass) -> None:
    t = task(retries=1)
    decision = decide_retry(t, attempts(t, cls), diag(cls), LIMITS)
    assert decision.failure is cls and decision.reason.startswith("it failed")


def test_empty_attempts_use_the_task_resources() -> None:
    t = task(memory=GIB)
    decision = decide_retry(t, [], diag(F.OUT_OF_MEMORY), LIMITS)
    assert decision.resources.memory == int(1.5 * GIB)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="above 1"):
        RetryConfig(memory_factor=1.0)

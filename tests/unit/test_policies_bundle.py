"""One policy bundle and one retry ledger serve the live engine and the simulator."""

from __future__ import annotations

import pytest

from hpcorch.engine.recovery import Recovery
from hpcorch.failures import Diagnosis, FailureClass
from hpcorch.policies.bundle import Policies
from hpcorch.policies.ledger import RetryLedger
from hpcorch.policies.retry import RetryConfig, decide_retry
from hpcorch.policies.scale import decide_scale, decide_simple
from hpcorch.policies.state import Attempt, PartitionLimits, Resources, SiteLimits, TaskInfo
from hpcorch.sim.driver import WorkflowSim
from hpcorch.sim.runs import simulate_workflow
from hpcorch.sim.workload import synthetic
from hpcorch.sites.resolve import resolve_site

LIMITS = SiteLimits("s", (PartitionLimits("p", 4, 8, 8 * 2**30),))
TASK = TaskInfo(id="t", resources=Resources(cpus=1, memory=2**30), retries=1)


def _failed(ledger: RetryLedger[str], cls: FailureClass, node: str, now: float) -> bool:
    diagnosis = Diagnosis(cls, "R0", "why", node=node, strike=cls is FailureClass.NODE_FAILURE)
    attempt = Attempt(n=len(ledger.attempts("t")) + 1, resources=TASK.resources, failure=cls)
    decision, _ = ledger.failed("t", TASK, attempt, diagnosis, LIMITS, now=now)
    return decision.retry


@pytest.mark.parametrize("cls", list(FailureClass))
def test_decide_retry_answers_every_failure_class(cls: FailureClass) -> None:
    decision = decide_retry(
        TASK,
        [Attempt(n=1, resources=TASK.resources, failure=cls)],
        Diagnosis(cls, "R0", "why"),
        LIMITS,
    )
    assert decision.failure is cls


def test_the_ledger_counts_infrastructure_failures_and_strikes_in_the_window() -> None:
    ledger: RetryLedger[str] = RetryLedger(Policies(retry_config=RetryConfig(strike_threshold=1)))
    assert _failed(ledger, FailureClass.INFRASTRUCTURE, "n1", 0.0)
    assert ledger.infrastructure_failures == 1
    _failed(ledger, FailureClass.NODE_FAILURE, "n1", 10.0)
    assert ledger.struck(10.0) == {"n1"}
    assert ledger.struck(10.0 + 3600.0 + 1) == frozenset()  # out of the window: dropped
    assert not ledger.strikes
    assert [a.n for a in ledger.attempts("t")] == [1, 2]


def test_engine_and_simulator_keep_the_same_ledger() -> None:
    recovery = Recovery(resolve_site("dev"))
    assert isinstance(recovery.ledger, RetryLedger)
    assert recovery.policies == Policies()
    sim = simulate_workflow(synthetic(20, seed=1), nodes=2)
    assert isinstance(sim, WorkflowSim) and isinstance(sim.ledger, RetryLedger)


def test_scaling_policies_by_name_in_the_bundle() -> None:
    assert Policies.named().scale is decide_scale
    assert Policies.named("simple").scale is decide_simple
    with pytest.raises(ValueError, match="demand, simple"):
        Policies.named("eager")

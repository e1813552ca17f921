"""Job and node states mapped from Slurm's documented tables."""

from __future__ import annotations

import pytest

from hpcorch.slurm.states import (
    FailureClass,
    JobState,
    NodeState,
    classify_failure,
    parse_job_state,
    parse_node_state,
)

# squeue(1) "JOB STATE CODES": (name, code, terminal, failure class)
DOCUMENTED = [
    ("BOOT_FAIL", "BF", True, "node_failure"),
    ("CANCELLED", "CA", True, "cancelled"),
    ("COMPLETED", "CD", True, None),
    ("CONFIGURING", "CF", False, None),
    ("COMPLETING", "CG", False, None),
    ("DEADLINE", "DL", True, "timeout"),
    ("FAILED", "F", True, "user_error"),
    ("NODE_FAIL", "NF", True, "node_failure"),
    ("OUT_OF_MEMORY", "OOM", True, "out_of_memory"),
    ("PENDING", "PD", False, None),
    ("PREEMPTED", "PR", True, "preempted"),
    ("RUNNING", "R", False, None),
    ("RESV_DEL_HOLD", "RD", False, None),
    ("REQUEUE_FED", "RF", False, None),
    ("REQUEUE_HOLD", "RH", False, None),
    ("REQUEUED", "RQ", False, None),
    ("RESIZING", "RS", False, None),
    ("REVOKED", "RV", True, None),  # ran on a sibling cluster: not a failure here
    ("SIGNALING", "SI", False, None),
    ("SPECIAL_EXIT", "SE", False, None),
    ("STAGE_OUT", "SO", False, None),
    ("STOPPED", "ST", False, None),
    ("SUSPENDED", "S", False, None),
    ("TIMEOUT", "TO", True, "timeout"),
]


@pytest.mark.parametrize(("name", "code", "terminal", "failure"), DOCUMENTED)
def test_documented_job_states(name: str, code: str, terminal: bool, failure: str | None) -> None:
    state = parse_job_state(name)
    assert state.value == name
    assert parse_job_state(code) is state
    assert parse_job_state(name.lower()) is state
    assert state.terminal is terminal
    assert (state.failure.value if state.failure else None) == failure
    assert classify_failure(state) == (FailureClass(failure) if failure else None)


def test_every_enum_member_is_documented() -> None:
    assert {s.value for s in JobState} - {d[0] for d in DOCUMENTED} == {"UNKNOWN"}


def test_job_state_variants() -> None:
    assert parse_job_state("CANCELLED by 1000") is JobState.CANCELLED
    assert parse_job_state(["PENDING", "REQUEUED"]) is JobState.REQUEUED
    assert parse_job_state(["RUNNING", "COMPLETING"]) is JobState.COMPLETING
    assert parse_job_state(["COMPLETED"]) is JobState.COMPLETED
    assert parse_job_state(None) is JobState.UNKNOWN
    assert parse_job_state("WHATEVER") is JobState.UNKNOWN
    assert JobState.RUNNING.active and not JobState.PENDING.active


def test_reason_refines_the_class_via_hpcorch_failures() -> None:
    assert classify_failure(JobState.FAILED, "NodeDown") is FailureClass.NODE_FAILURE
    assert (
        classify_failure(JobState.FAILED, "launch failed requeued held")
        is FailureClass.INFRASTRUCTURE
    )
    assert classify_failure(JobState.FAILED, "NonZeroExitCode", 3) is FailureClass.USER_ERROR
    assert classify_failure(JobState.TIMEOUT, "TimeLimit") is FailureClass.TIMEOUT
    assert classify_failure(JobState.RUNNING) is None


@pytest.mark.parametrize(
    ("text", "state", "flags", "usable"),
    [
        ("idle", NodeState.IDLE, set(), True),
        ("alloc", NodeState.ALLOCATED, set(), True),
        ("mix", NodeState.MIXED, set(), True),
        ("down*", NodeState.DOWN, {"NOT_RESPONDING"}, False),
        ("drained", NodeState.IDLE, {"DRAIN"}, False),
        ("draining", NodeState.ALLOCATED, {"DRAIN"}, False),
        ("drng", NodeState.ALLOCATED, {"DRAIN"}, False),
        ("fail", NodeState.DOWN, {"FAIL", "DRAIN"}, False),
        ("idle~", NodeState.IDLE, {"POWERED_DOWN"}, False),
        ("IDLE+DRAIN", NodeState.IDLE, {"DRAIN"}, False),
        ("MIXED+NOT_RESPONDING", NodeState.MIXED, {"NOT_RESPONDING"}, False),
        ("maint", NodeState.IDLE, {"MAINTENANCE"}, False),
        ("future", NodeState.FUTURE, set(), False),
    ],
)
def test_node_states(text: str, state: NodeState, flags: set[str], usable: bool) -> None:
    status = parse_node_state(text)
    assert status.state is state
    assert status.flags == flags
    assert status.usable is usable


def test_node_state_list_form_and_failed() -> None:
    status = parse_node_state(["DOWN", "NOT_RESPONDING"])
    assert status.failed and not status.responding
    assert str(status) == "DOWN+NOT_RESPONDING"
    assert not parse_node_state("idle").failed

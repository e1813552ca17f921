"""Every row of the failure decision table in hpcorch.failures, and its precedence."""

from __future__ import annotations

import re

import pytest

import hpcorch.failures as module
from hpcorch.failures import (
    Evidence,
    FailureClass,
    classify,
    diagnose,
    failure_of_state,
    normalise_slurm_state,
    parse_exit_code,
)

GIB = 1024**3
F = FailureClass


def test_values_are_the_contract() -> None:
    assert [c.value for c in FailureClass] == [
        "user_error",
        "out_of_memory",
        "timeout",
        "node_failure",
        "preempted",
        "cancelled",
        "infrastructure",
        "scheduler_connection_lost",
    ]
    assert FailureClass("timeout") is F.TIMEOUT
    assert str(F.OUT_OF_MEMORY) == "out_of_memory"


ROWS: list[tuple[str, Evidence, FailureClass]] = [
    ("R1", Evidence(cancel_requested=True, slurm_state="CANCELLED by 1000"), F.CANCELLED),
    ("R19", Evidence(scheduler_connection_lost=True), F.SCHEDULER_CONNECTION_LOST),
    (
        "R2",
        Evidence(submission_refused=True, slurm_reason="QOSMaxSubmitJobPerUserLimit"),
        F.INFRASTRUCTURE,
    ),
    ("R3", Evidence(controller_unreachable=True), F.INFRASTRUCTURE),
    ("R4", Evidence(slurm_state="BOOT_FAIL", node="cpu1"), F.NODE_FAILURE),
    ("R5", Evidence(slurm_state="NODE_FAIL", node="cpu1"), F.NODE_FAILURE),
    ("R5", Evidence(slurm_state="FAILED", slurm_reason="NodeDown", node="cpu2"), F.NODE_FAILURE),
    ("R6", Evidence(slurm_state="PREEMPTED"), F.PREEMPTED),
    ("R7", Evidence(slurm_state="OUT_OF_MEMORY", exit_code=0, signal=125), F.OUT_OF_MEMORY),
    ("R8", Evidence(slurm_state="TIMEOUT", signal=15), F.TIMEOUT),
    ("R8", Evidence(slurm_state="DEADLINE"), F.TIMEOUT),
    ("R9", Evidence(slurm_state="CANCELLED by 1000", owner_uid=1000), F.CANCELLED),
    ("R9", Evidence(slurm_state="CANCELLED", cancelled_by_uid=0, owner_uid=1000), F.CANCELLED),
    ("R10", Evidence(slurm_state="FAILED", exit_code=0, signal=53), F.INFRASTRUCTURE),
    ("R10", Evidence(slurm_state="FAILED", slurm_reason="RaisedSignal:53"), F.INFRASTRUCTURE),
    ("R10", Evidence(slurm_reason="launch failed requeued held"), F.INFRASTRUCTURE),
    ("R10", Evidence(slurm_state="FAILED", slurm_reason="JobLaunchFailure"), F.INFRASTRUCTURE),
    ("R10", Evidence(slurm_state="FAILED", slurm_reason="Prolog"), F.INFRASTRUCTURE),
    ("R10", Evidence(slurm_state="FAILED", slurm_reason="SystemFailure"), F.INFRASTRUCTURE),
    ("R11", Evidence(exception_type="MemoryError"), F.OUT_OF_MEMORY),
    ("R11", Evidence(exception_type="numpy.core._exceptions._ArrayMemoryError"), F.OUT_OF_MEMORY),
    ("R11", Evidence(exception_type="cupy.cuda.memory.OutOfMemoryError"), F.OUT_OF_MEMORY),
    (
        "R12",
        Evidence(
            worker_lost=True,
            node="cpu1",
            node_healthy=True,
            memory_requested=4 * GIB,
            memory_peak=4 * GIB,
        ),
        F.OUT_OF_MEMORY,
    ),
    (
        "R12",
        Evidence(
            exception_type="distributed.scheduler.KilledWorker",
            node_healthy=True,
            memory_requested=2 * GIB,
            memory_peak=2 * GIB - 1,
        ),
        F.OUT_OF_MEMORY,
    ),
    ("R13", Evidence(worker_lost=True, node="cpu1", node_healthy=False), F.NODE_FAILURE),
    ("R13", Evidence(exception_type="KilledWorker", node="cpu2"), F.NODE_FAILURE),
    (
        "R13",
        # memory exceeded, but the node is not known to be healthy: blame the node
        Evidence(worker_lost=True, node="cpu1", memory_requested=GIB, memory_peak=2 * GIB),
        F.NODE_FAILURE,
    ),
    ("R13", Evidence(exception_type="CommClosedError", node_healthy=True), F.NODE_FAILURE),
    ("R14", Evidence(exit_code=137, memory_requested=GIB, memory_peak=GIB), F.OUT_OF_MEMORY),
    ("R14", Evidence(exit_code=-9, memory_requested=GIB, memory_peak=2 * GIB), F.OUT_OF_MEMORY),
    (
        "R14",
        Evidence(exit_code=0, signal=9, memory_requested=GIB, memory_peak=GIB),
        F.OUT_OF_MEMORY,
    ),
    ("R15", Evidence(exit_code=1, node="gpu1", node_healthy=False), F.NODE_FAILURE),
    ("R15", Evidence(exit_code=137, node="gpu1", node_healthy=False), F.NODE_FAILURE),
    ("R16", Evidence(exit_code=1), F.USER_ERROR),
    (
        "R16",
        Evidence(slurm_state="FAILED", slurm_reason="NonZeroExitCode", exit_code=2),
        F.USER_ERROR,
    ),
    ("R16", Evidence(exit_code=137), F.USER_ERROR),  # SIGKILL without memory evidence
    ("R16", Evidence(exit_code=139), F.USER_ERROR),  # SIGSEGV
    ("R16", Evidence(exit_code=137, memory_requested=4 * GIB, memory_peak=GIB), F.USER_ERROR),
    ("R16", Evidence(exception_type="ValueError", exception_message="bad input"), F.USER_ERROR),
    ("R16", Evidence(slurm_state="FAILED"), F.USER_ERROR),
    ("R17", Evidence(), F.USER_ERROR),
]


@pytest.mark.parametrize(("rule", "evidence", "expected"), ROWS)
def test_decision_table_row(rule: str, evidence: Evidence, expected: FailureClass) -> None:
    diagnosis = diagnose(evidence)
    assert (diagnosis.rule, diagnosis.failure) == (rule, expected), diagnosis.reason
    assert classify(evidence) is expected
    assert diagnosis.reason


def test_every_row_is_tested() -> None:
    assert {rule for rule, _, _ in ROWS} == {f"R{i}" for i in range(1, 18)} | {"R19"}


def test_precedence_cancel_request_beats_everything() -> None:
    evidence = Evidence(cancel_requested=True, controller_unreachable=True, slurm_state="NODE_FAIL")
    assert classify(evidence) is F.CANCELLED


def test_slurm_state_beats_process_evidence() -> None:
    # Slurm's OOM kill shows as SIGKILL to the process; the state is the better evidence
    assert classify(Evidence(slurm_state="OUT_OF_MEMORY", exit_code=137)) is F.OUT_OF_MEMORY
    # a walltime kill shows as SIGTERM, not a user error
    assert classify(Evidence(slurm_state="TIMEOUT", exit_code=143)) is F.TIMEOUT


def test_strike_only_when_the_node_itself_failed() -> None:
    assert diagnose(Evidence(slurm_state="NODE_FAIL", node="cpu1")).strike
    assert diagnose(Evidence(slurm_state="BOOT_FAIL", node="cpu1")).strike
    assert diagnose(Evidence(exit_code=1, node="cpu1", node_healthy=False)).strike
    assert diagnose(Evidence(worker_lost=True, node="cpu1")).strike
    healthy = diagnose(Evidence(worker_lost=True, node="cpu1", node_healthy=True))
    assert healthy.node == "cpu1" and not healthy.strike
    assert not diagnose(Evidence(exit_code=1, node="cpu1")).strike


def test_node_is_blamed_only_for_node_failures() -> None:
    assert diagnose(Evidence(slurm_state="NODE_FAIL", node="cpu1")).node == "cpu1"
    assert diagnose(Evidence(worker_lost=True, node="cpu2")).node == "cpu2"
    assert diagnose(Evidence(exit_code=1, node="cpu1")).node is None
    assert diagnose(Evidence(slurm_state="OUT_OF_MEMORY", node="cpu1")).node is None


def test_cancel_reason_tells_owner_from_admin() -> None:
    by_admin = diagnose(Evidence(slurm_state="CANCELLED by 0", owner_uid=1000))
    by_owner = diagnose(Evidence(slurm_state="CANCELLED by 1000", owner_uid=1000))
    assert "administrator" in by_admin.reason and "uid 0" in by_admin.reason
    assert "owner" in by_owner.reason


def test_scope_is_carried() -> None:
    diagnosis = diagnose(Evidence(slurm_state="CANCELLED", scope="allocation"))
    assert diagnosis.scope == "allocation"
    assert "allocation" in diagnosis.reason


def test_setup_failure_says_what_to_check() -> None:
    reason = diagnose(Evidence(exit_code=0, signal=53)).reason
    assert "writable" in reason


def test_exit_53_is_not_a_setup_failure() -> None:
    # a process that exits 53 by itself is the user's
    assert classify(Evidence(exit_code=53)) is F.USER_ERROR


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CANCELLED by 1000", ("CANCELLED", 1000)),
        ("cancelled  by 0", ("CANCELLED", 0)),
        ("CANCELLED+", ("CANCELLED", None)),
        ("OOM", ("OUT_OF_MEMORY", None)),
        ("to", ("TIMEOUT", None)),
        ("NF", ("NODE_FAIL", None)),
        ("node_fail", ("NODE_FAIL", None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_normalise_slurm_state(text: str | None, expected: tuple[str | None, int | None]) -> None:
    assert normalise_slurm_state(text) == expected


def test_parse_exit_code() -> None:
    assert parse_exit_code("0:53") == (0, 53)
    assert parse_exit_code("137:0") == (137, 0)
    assert parse_exit_code("1") == (1, 0)
    with pytest.raises(ValueError, match="1:0"):
        parse_exit_code("one")


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("COMPLETED", None),
        ("RUNNING", None),
        ("PENDING", None),
        ("FAILED", F.USER_ERROR),
        ("OUT_OF_MEMORY", F.OUT_OF_MEMORY),
        ("TIMEOUT", F.TIMEOUT),
        ("DEADLINE", F.TIMEOUT),
        ("NODE_FAIL", F.NODE_FAILURE),
        ("BOOT_FAIL", F.NODE_FAILURE),
        ("PREEMPTED", F.PREEMPTED),
        ("CANCELLED by 0", F.CANCELLED),
    ],
)
def test_failure_of_state(state: str, expected: FailureClass | None) -> None:
    assert failure_of_state(state) is expected


# One piece of evidence per row of the decision table, and the id the journal records for
# it. Ids are names, not positions: a new row takes the next free id and none of these
# changes (retry events written by an older hpcorch keep their meaning).
PINNED_RULES = [
    (Evidence(walltime_killed=True, exception_message="ran past 2s"), "R18", "timeout"),
    (Evidence(cancel_requested=True), "R1", "cancelled"),
    (Evidence(scheduler_connection_lost=True), "R19", "scheduler_connection_lost"),
    (Evidence(submission_refused=True), "R2", "infrastructure"),
    (Evidence(controller_unreachable=True), "R3", "infrastructure"),
    (Evidence(slurm_state="BOOT_FAIL"), "R4", "node_failure"),
    (Evidence(slurm_state="NODE_FAIL"), "R5", "node_failure"),
    (Evidence(slurm_state="PREEMPTED"), "R6", "preempted"),
    (Evidence(slurm_state="OUT_OF_MEMORY"), "R7", "out_of_memory"),
    (Evidence(slurm_state="TIMEOUT"), "R8", "timeout"),
    (Evidence(slurm_state="CANCELLED by 0"), "R9", "cancelled"),
    (Evidence(slurm_reason="launch failed requeued held"), "R10", "infrastructure"),
    (Evidence(exception_type="MemoryError"), "R11", "out_of_memory"),
    (
        Evidence(worker_lost=True, node_healthy=True, memory_requested=100, memory_peak=99),
        "R12",
        "out_of_memory",
    ),
    (Evidence(worker_lost=True), "R13", "node_failure"),
    (Evidence(signal=9, memory_requested=100, memory_peak=99), "R14", "out_of_memory"),
    (Evidence(exit_code=1, node_healthy=False), "R15", "node_failure"),
    (Evidence(exit_code=1), "R16", "user_error"),
    (Evidence(), "R17", "user_error"),
]


@pytest.mark.parametrize(("evidence", "rule", "failure"), PINNED_RULES)
def test_rule_ids_are_stable(evidence: Evidence, rule: str, failure: str) -> None:
    found = diagnose(evidence)
    assert (found.rule, str(found.failure)) == (rule, failure)


def test_every_rule_of_the_table_is_pinned_once() -> None:
    documented = re.findall(r"^(R\d+)\s", module.__doc__ or "", re.MULTILINE)
    assert len(documented) == len(set(documented))
    assert sorted(documented) == sorted(rule for _, rule, _ in PINNED_RULES)

"""Classify a failed attempt from its evidence, before anything is retried.

:func:`diagnose` is a pure function from :class:`Evidence` (what the monitor,
Slurm and Dask said about one attempt) to a :class:`Diagnosis`: the
:class:`FailureClass`, the decision-table row that matched, a one-line reason
for the journal, and the node to blame, if any. :func:`classify` returns the
class alone. The Slurm client maps job states to these classes through this
module; nothing else re-derives them.

Decision table. Rows are tried in order; the first that matches wins. "state"
is the Slurm job (or step) state, normalised (``CANCELLED by 0`` →
``CANCELLED``, short codes such as ``OOM``/``TO``/``NF`` expanded). "exit" and
"signal" come from the process (a negative exit code is a signal, an exit code
of 129-192 from a shell is 128 + signal), or from Slurm's ``exit:signal`` form
(:func:`parse_exit_code`).

====  ==============================================================  =========================
rule  evidence                                                        class
====  ==============================================================  =========================
R18   hpcorch's worker killed the task at its walltime                timeout
      (``walltime_killed``)
R1    the run itself asked to cancel the task (``cancel_requested``)  cancelled
R19   the driver's Dask client lost its connection to the scheduler   scheduler_connection_lost
      and distributed cancelled the attempt's future
      (``scheduler_connection_lost``); the attempt may never have run
R2    Slurm refused the submission (``submission_refused``)           infrastructure
R3    slurmctld or slurmrestd unreachable                             infrastructure
R4    state ``BOOT_FAIL``                                             node_failure
R5    state ``NODE_FAIL``, or reason ``NodeDown``/``NodeFail``        node_failure
R6    state ``PREEMPTED``                                             preempted
R7    state ``OUT_OF_MEMORY``                                         out_of_memory
R8    state ``TIMEOUT`` or ``DEADLINE``                               timeout
R9    state ``CANCELLED``, by the owner, an admin or unknown          cancelled
R10   Slurm could not set the step up, so the user's code never ran:  infrastructure
      reason ``launch failed requeued held``, ``JobLaunchFailure``,
      ``Prolog``/``Epilog``, ``SystemFailure``, ``RaisedSignal:53``,
      or exit ``0:53`` (an output file or working directory that is
      not writable on the node)
R11   Python ``MemoryError`` (numpy ``_ArrayMemoryError``, CuPy or    out_of_memory
      PyTorch ``OutOfMemoryError``)
R12   Dask lost the worker (``worker_lost``, ``KilledWorker``,        out_of_memory
      ``CommClosedError``) on a node known healthy, and the memory
      use reached 95 % of the request
R13   Dask lost the worker otherwise                                  node_failure
R14   SIGKILL (signal 9, exit 137) with memory use at or above 95 %   out_of_memory
      of the request
R15   the node was unhealthy (down, fail, not responding) at failure  node_failure
R16   any other non-zero exit, signal, exception or Slurm state       user_error
R17   no evidence at all                                              user_error
====  ==============================================================  =========================

Rule ids are names, not positions: the journal records them (``retry`` events),
so a new row takes the next free id wherever it goes in the order, and no
existing row is renumbered (``tests/unit/test_failures.py`` pins them).

``scope`` says whose Slurm state it is: ``"task"`` when the task ran as its own
job or step, ``"allocation"`` when the state belongs to the allocation that
hosted the task's worker (the task died with it). The class is the same; the
retry policy uses the scope (an allocation cancelled under a task requeues the
task, a task cancelled by its owner stays cancelled).

A cancellation is by an admin when ``cancelled_by_uid`` differs from
``owner_uid``; the reason says which, the class is ``cancelled`` either way.
"""

from __future__ import annotations

import re
import signal as _signal
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

__all__ = [
    "Diagnosis",
    "Evidence",
    "FailureClass",
    "Scope",
    "classify",
    "diagnose",
    "failure_of_state",
    "normalise_slurm_state",
    "parse_exit_code",
]

Scope = Literal["task", "allocation"]


class FailureClass(StrEnum):
    """Why an attempt failed. The values are the contract in ``status --json`` and the journal."""

    USER_ERROR = "user_error"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    NODE_FAILURE = "node_failure"
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"
    INFRASTRUCTURE = "infrastructure"
    SCHEDULER_CONNECTION_LOST = "scheduler_connection_lost"


@dataclass(frozen=True, slots=True)
class Evidence:
    """What is known about one failed attempt. Every field is optional."""

    slurm_state: str | None = None
    """Slurm job or step state: ``FAILED``, ``OUT_OF_MEMORY``, ``CANCELLED by 0``, ``TO``..."""
    slurm_reason: str | None = None
    """Slurm's reason: ``NonZeroExitCode``, ``NodeDown``, ``launch failed requeued held``..."""
    scope: Scope = "task"
    cancelled_by_uid: int | None = None
    owner_uid: int | None = None
    cancel_requested: bool = False
    """The run (``hpcorch cancel`` or the Python API) asked for this task to stop."""
    exit_code: int | None = None
    signal: int | None = None
    exception_type: str | None = None
    """Class name of the Python exception, bare or qualified: ``numpy.core._ArrayMemoryError``."""
    exception_message: str | None = None
    worker_lost: bool = False
    memory_requested: int | None = None
    """Bytes the attempt asked for (per node)."""
    memory_peak: int | None = None
    """Peak bytes the attempt used (sacct MaxRSS, cgroup peak, Dask worker memory)."""
    node: str | None = None
    node_healthy: bool | None = None
    """The monitor's view of the node at the failure: False when down/fail/not responding."""
    submission_refused: bool = False
    controller_unreachable: bool = False
    scheduler_connection_lost: bool = False
    """Distributed cancelled the attempt's future because the driver's client lost its
    connection to the scheduler (``scheduler-connection-lost``), not because anyone asked."""
    walltime_killed: bool = False
    """hpcorch's worker stopped the task at its walltime (Slurm's limit is the allocation's)."""


@dataclass(frozen=True, slots=True)
class Diagnosis:
    failure: FailureClass
    rule: str
    """Row of the decision table that matched (``R1``..``R19``), stable across releases."""
    reason: str
    """One line for the journal and ``status``."""
    node: str | None = None
    """Node to keep this task away from, or None when the node is not at fault."""
    scope: Scope = "task"
    strike: bool = False
    """The evidence points at the node itself (Slurm or the monitor saw it fail), not only
    at a lost worker on a node known healthy: count it in the run's strike table."""


_SHORT_STATES = {
    "BF": "BOOT_FAIL",
    "CA": "CANCELLED",
    "CD": "COMPLETED",
    "DL": "DEADLINE",
    "F": "FAILED",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "PR": "PREEMPTED",
    "TO": "TIMEOUT",
}
_FAILED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)
_CANCELLED_BY = re.compile(r"CANCELLED\s+BY\s+(\d+)")
_OOM_EXCEPTIONS = frozenset(
    {"MemoryError", "_ArrayMemoryError", "ArrayMemoryError", "OutOfMemoryError"}
)
_LOST_WORKER_EXCEPTIONS = frozenset({"KilledWorker", "CommClosedError"})
_NODE_REASONS = ("nodedown", "nodefail", "node_fail")
_SETUP_REASONS = (
    "launch failed requeued held",
    "joblaunchfailure",
    "prolog",
    "epilog",
    "systemfailure",
    "raisedsignal:53",
)
# slurmstepd reports "could not set the step up" (job_rc 4021) as signal 53.
_SETUP_SIGNAL = 53
_OOM_FRACTION = 0.95


def normalise_slurm_state(state: str | None) -> tuple[str | None, int | None]:
    """``"CANCELLED by 1000"`` → ``("CANCELLED", 1000)``; ``"oom"`` → ``("OUT_OF_MEMORY", None)``.

    Accepts sacct's truncated ``CANCELLED+`` and REST's lower case.
    """
    if state is None or not state.strip():
        return None, None
    text = " ".join(state.strip().upper().rstrip("+").split())
    match = _CANCELLED_BY.fullmatch(text)
    if match:
        return "CANCELLED", int(match.group(1))
    return _SHORT_STATES.get(text, text), None


def parse_exit_code(text: str) -> tuple[int, int]:
    """Slurm's ``"exit:signal"`` (``"0:53"``, ``"137:0"``) → ``(exit_code, signal)``."""
    match = re.fullmatch(r"\s*(\d+)(?::(\d+))?\s*", text)
    if not match:
        raise ValueError(f"Slurm exit code must look like '1:0' or '0:9', got {text!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def _signal_of(evidence: Evidence) -> int | None:
    if evidence.signal:
        return evidence.signal
    code = evidence.exit_code
    if code is not None and code < 0:
        return -code
    if code is not None and 128 < code <= 192:
        return code - 128
    return None


def _signal_name(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _memory_exceeded(evidence: Evidence) -> bool:
    requested, peak = evidence.memory_requested, evidence.memory_peak
    return requested is not None and peak is not None and peak >= _OOM_FRACTION * requested


def _memory_text(evidence: Evidence) -> str:
    if evidence.memory_peak is None or evidence.memory_requested is None:
        return ""
    mib = 1024**2
    return f" (peak {evidence.memory_peak // mib} MiB of {evidence.memory_requested // mib} MiB)"


def _short_name(exception_type: str | None) -> str | None:
    return exception_type.rsplit(".", 1)[-1] if exception_type else None


def _on(evidence: Evidence) -> str:
    what = "allocation" if evidence.scope == "allocation" else "job"
    node = f" on {evidence.node}" if evidence.node else ""
    return f"{what}{node}"


def _cancel_reason(evidence: Evidence, uid: int | None) -> str:
    by_uid = evidence.cancelled_by_uid if evidence.cancelled_by_uid is not None else uid
    if by_uid is None:
        who = "by someone outside the run"
    elif evidence.owner_uid is not None and by_uid != evidence.owner_uid:
        who = f"by an administrator (uid {by_uid})"
    else:
        who = f"by its owner (uid {by_uid})"
    return f"{_on(evidence)} cancelled {who}"


def _slurm_rule(evidence: Evidence, state: str | None, uid: int | None) -> Diagnosis | None:
    reason = (evidence.slurm_reason or "").strip().lower()
    scope = evidence.scope
    if state == "BOOT_FAIL":
        return Diagnosis(
            FailureClass.NODE_FAILURE,
            "R4",
            f"{_on(evidence)} failed to boot",
            evidence.node,
            scope,
            True,
        )
    if state == "NODE_FAIL" or reason.startswith(_NODE_REASONS):
        return Diagnosis(
            FailureClass.NODE_FAILURE,
            "R5",
            f"{_on(evidence)}: node failed",
            evidence.node,
            scope,
            True,
        )
    if state == "PREEMPTED":
        return Diagnosis(FailureClass.PREEMPTED, "R6", f"{_on(evidence)} preempted", scope=scope)
    if state == "OUT_OF_MEMORY":
        text = f"{_on(evidence)} killed for exceeding its memory{_memory_text(evidence)}"
        return Diagnosis(FailureClass.OUT_OF_MEMORY, "R7", text, scope=scope)
    if state in ("TIMEOUT", "DEADLINE"):
        limit = "deadline" if state == "DEADLINE" else "walltime"
        return Diagnosis(
            FailureClass.TIMEOUT, "R8", f"{_on(evidence)} reached its {limit}", scope=scope
        )
    if state == "CANCELLED":
        return Diagnosis(FailureClass.CANCELLED, "R9", _cancel_reason(evidence, uid), scope=scope)
    if reason.startswith(_SETUP_REASONS) or (
        _signal_of(evidence) == _SETUP_SIGNAL and not evidence.exit_code
    ):
        text = (
            f"Slurm could not start the {_on(evidence)} ({evidence.slurm_reason or 'signal 53'}): "
            "check that the run directory and output paths exist and are writable "
            "from the compute nodes"
        )
        return Diagnosis(FailureClass.INFRASTRUCTURE, "R10", text, scope=scope)
    return None


def diagnose(evidence: Evidence) -> Diagnosis:
    """Classify one failed attempt; see the module docstring for the decision table."""
    scope = evidence.scope
    if evidence.walltime_killed:
        text = evidence.exception_message or "stopped at its walltime"
        return Diagnosis(FailureClass.TIMEOUT, "R18", text, scope=scope)
    if evidence.cancel_requested:
        return Diagnosis(FailureClass.CANCELLED, "R1", "cancelled by the run", scope=scope)
    if evidence.scheduler_connection_lost:
        text = "the driver lost its connection to the Dask scheduler"
        return Diagnosis(FailureClass.SCHEDULER_CONNECTION_LOST, "R19", text, scope=scope)
    if evidence.submission_refused:
        text = f"Slurm refused the submission: {evidence.slurm_reason or 'no reason given'}"
        return Diagnosis(FailureClass.INFRASTRUCTURE, "R2", text, scope=scope)
    if evidence.controller_unreachable:
        return Diagnosis(
            FailureClass.INFRASTRUCTURE, "R3", "Slurm controller unreachable", scope=scope
        )
    state, uid = normalise_slurm_state(evidence.slurm_state)
    by_slurm = _slurm_rule(evidence, state, uid)
    if by_slurm is not None:
        return by_slurm

    exception = _short_name(evidence.exception_type)
    if exception in _OOM_EXCEPTIONS:
        return Diagnosis(
            FailureClass.OUT_OF_MEMORY,
            "R11",
            f"raised {exception}{_memory_text(evidence)}",
            scope=scope,
        )
    if evidence.worker_lost or exception in _LOST_WORKER_EXCEPTIONS:
        what = exception or "worker lost"
        if evidence.node_healthy is True and _memory_exceeded(evidence):
            text = f"{what}: the worker exceeded its memory{_memory_text(evidence)}"
            return Diagnosis(FailureClass.OUT_OF_MEMORY, "R12", text, scope=scope)
        text = f"{what}: Dask lost the worker on {evidence.node or 'an unknown node'}"
        suspect = evidence.node_healthy is not True
        return Diagnosis(FailureClass.NODE_FAILURE, "R13", text, evidence.node, scope, suspect)
    sig = _signal_of(evidence)
    if sig == _signal.SIGKILL and _memory_exceeded(evidence):
        text = f"killed by SIGKILL at its memory limit{_memory_text(evidence)}"
        return Diagnosis(FailureClass.OUT_OF_MEMORY, "R14", text, scope=scope)
    if evidence.node_healthy is False:
        text = f"failed while its node {evidence.node or '(unknown)'} was unhealthy"
        return Diagnosis(FailureClass.NODE_FAILURE, "R15", text, evidence.node, scope, True)
    if sig is not None:
        return Diagnosis(
            FailureClass.USER_ERROR, "R16", f"killed by {_signal_name(sig)}", scope=scope
        )
    if evidence.exit_code:
        text = f"exited with code {evidence.exit_code}"
        return Diagnosis(FailureClass.USER_ERROR, "R16", text, scope=scope)
    if exception is not None:
        message = f": {evidence.exception_message}" if evidence.exception_message else ""
        return Diagnosis(
            FailureClass.USER_ERROR, "R16", f"raised {exception}{message}", scope=scope
        )
    if state is not None:
        return Diagnosis(FailureClass.USER_ERROR, "R16", f"Slurm state {state}", scope=scope)
    return Diagnosis(
        FailureClass.USER_ERROR, "R17", "failed with no evidence of the cause", scope=scope
    )


def failure_of_state(state: str) -> FailureClass | None:
    """Failure class of a Slurm job state alone, None for a state that is not a failure.

    For the Slurm client's job-state enum: ``COMPLETED``/``RUNNING``/``PENDING`` → None,
    ``FAILED`` → user_error, ``OUT_OF_MEMORY`` → out_of_memory, and so on down the table.
    """
    name, _ = normalise_slurm_state(state)
    if name is None or name not in _FAILED_STATES:
        return None
    return classify(Evidence(slurm_state=name))


def classify(evidence: Evidence) -> FailureClass:
    """The failure class of one failed attempt (:func:`diagnose` without the explanation)."""
    return diagnose(evidence).failure

"""Slurm job and node states, mapped in one place from Slurm's documented tables.

Job states follow the "JOB STATE CODES" table of ``squeue(1)``; node states
the "NODE STATE CODES" of ``sinfo(1)``. Each :class:`JobState` says whether it
is terminal and, for failures, its :class:`~hpcorch.failures.FailureClass` —
taken from :mod:`hpcorch.failures`, the one decision table of failure classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from hpcorch.failures import Evidence, FailureClass, classify, failure_of_state

__all__ = [
    "FailureClass",
    "JobState",
    "NodeState",
    "NodeStatus",
    "classify_failure",
    "parse_job_state",
    "parse_node_state",
]


class JobState(StrEnum):
    """A Slurm job state. ``terminal``: the job will not run again by itself."""

    terminal: bool
    code: str

    def __new__(cls, value: str, code: str, terminal: bool) -> JobState:
        member = str.__new__(cls, value)
        member._value_ = value
        member.code = code
        member.terminal = terminal
        return member

    # name, squeue code, terminal
    PENDING = ("PENDING", "PD", False)
    CONFIGURING = ("CONFIGURING", "CF", False)
    RUNNING = ("RUNNING", "R", False)
    COMPLETING = ("COMPLETING", "CG", False)
    SUSPENDED = ("SUSPENDED", "S", False)
    STOPPED = ("STOPPED", "ST", False)
    RESIZING = ("RESIZING", "RS", False)
    SIGNALING = ("SIGNALING", "SI", False)
    STAGE_OUT = ("STAGE_OUT", "SO", False)
    REQUEUED = ("REQUEUED", "RQ", False)
    REQUEUE_FED = ("REQUEUE_FED", "RF", False)
    REQUEUE_HOLD = ("REQUEUE_HOLD", "RH", False)
    SPECIAL_EXIT = ("SPECIAL_EXIT", "SE", False)
    RESV_DEL_HOLD = ("RESV_DEL_HOLD", "RD", False)
    COMPLETED = ("COMPLETED", "CD", True)
    FAILED = ("FAILED", "F", True)
    OUT_OF_MEMORY = ("OUT_OF_MEMORY", "OOM", True)
    TIMEOUT = ("TIMEOUT", "TO", True)
    DEADLINE = ("DEADLINE", "DL", True)
    NODE_FAIL = ("NODE_FAIL", "NF", True)
    BOOT_FAIL = ("BOOT_FAIL", "BF", True)
    PREEMPTED = ("PREEMPTED", "PR", True)
    CANCELLED = ("CANCELLED", "CA", True)
    REVOKED = ("REVOKED", "RV", True)
    UNKNOWN = ("UNKNOWN", "?", False)

    @property
    def failure(self) -> FailureClass | None:
        """The failure class of ending in this state (None: not a failure)."""
        return failure_of_state(self.value)

    @property
    def active(self) -> bool:
        """Holding (or about to hold) resources: configuring, running, completing..."""
        return self in _ACTIVE

    @property
    def succeeded(self) -> bool:
        return self is JobState.COMPLETED


_ACTIVE = frozenset(
    {
        JobState.CONFIGURING,
        JobState.RUNNING,
        JobState.COMPLETING,
        JobState.RESIZING,
        JobState.SIGNALING,
        JobState.STAGE_OUT,
        JobState.SUSPENDED,
        JobState.STOPPED,
    }
)
_BY_CODE = {s.code: s for s in JobState}
# Precedence when Slurm >= 23.02 reports a list ("RUNNING", "COMPLETING"):
# the most specific flag wins over the base state.
_FLAG_STATES = ("COMPLETING", "CONFIGURING", "RESIZING", "REQUEUED", "SIGNALING", "STAGE_OUT")


def parse_job_state(value: str | Iterable[str] | None) -> JobState:
    """``"RUNNING"``, ``"R"``, ``"CANCELLED by 1000"`` or ``["PENDING", "REQUEUED"]`` → JobState."""
    if value is None:
        return JobState.UNKNOWN
    if not isinstance(value, str):
        names = [str(v).upper() for v in value]
        for flag in _FLAG_STATES:
            if flag in names and flag != "COMPLETING":
                return JobState[flag]
        if not names:
            return JobState.UNKNOWN
        base = parse_job_state(names[0])
        if "COMPLETING" in names and not base.terminal:
            return JobState.COMPLETING
        return base
    text = value.strip().upper()
    # sacct writes "CANCELLED by <uid>"; squeue -t long names; codes in short output
    word = text.split()[0] if text else ""
    word = word.rstrip("+")
    if word in JobState.__members__:
        return JobState[word]
    return _BY_CODE.get(word, JobState.UNKNOWN)


def classify_failure(
    state: JobState,
    reason: str | None = None,
    exit_code: int | None = None,
    signal: int | None = None,
) -> FailureClass | None:
    """The failure class of a finished job; None when it succeeded or has not ended.

    Delegates to :func:`hpcorch.failures.classify`, so a reason such as
    ``NodeDown`` or ``launch failed requeued held`` refines a plain FAILED.
    """
    if not state.terminal or state.failure is None:
        return None
    evidence = Evidence(
        slurm_state=state.value, slurm_reason=reason, exit_code=exit_code, signal=signal
    )
    return classify(evidence)


class NodeState(StrEnum):
    """Base node state from sinfo/scontrol (flags such as DRAIN are kept apart)."""

    IDLE = "IDLE"
    ALLOCATED = "ALLOCATED"
    MIXED = "MIXED"
    COMPLETING = "COMPLETING"
    DOWN = "DOWN"
    FUTURE = "FUTURE"
    UNKNOWN = "UNKNOWN"
    ERROR = "ERROR"


# sinfo long names that are a base state plus flags.
_NODE_ALIASES = {
    "ALLOC": ("ALLOCATED", ()),
    "MIX": ("MIXED", ()),
    "COMP": ("COMPLETING", ()),
    "DRAINED": ("IDLE", ("DRAIN",)),
    "DRAIN": ("IDLE", ("DRAIN",)),
    "DRAINING": ("ALLOCATED", ("DRAIN",)),
    "DRNG": ("ALLOCATED", ("DRAIN",)),
    "FAIL": ("DOWN", ("FAIL", "DRAIN")),
    "FAILING": ("ALLOCATED", ("FAIL", "DRAIN")),
    "MAINT": ("IDLE", ("MAINTENANCE",)),
    "MAINTENANCE": ("IDLE", ("MAINTENANCE",)),
    "RESERVED": ("IDLE", ("RESERVED",)),
    "RESV": ("IDLE", ("RESERVED",)),
    "PLANNED": ("IDLE", ("PLANNED",)),
    "INVAL": ("UNKNOWN", ("INVALID_REG",)),
    "INVALID": ("UNKNOWN", ("INVALID_REG",)),
    "UNK": ("UNKNOWN", ()),
    "POWERED_DOWN": ("IDLE", ("POWERED_DOWN",)),
    "POWER_DOWN": ("IDLE", ("POWERED_DOWN",)),
    "REBOOT": ("IDLE", ("REBOOT_REQUESTED",)),
    "BLOCKED": ("IDLE", ("BLOCKED",)),
    "CLOUD": ("IDLE", ("CLOUD",)),
}
# sinfo's one-character suffixes on the state name.
_SUFFIX_FLAGS = {
    "*": "NOT_RESPONDING",
    "~": "POWERED_DOWN",
    "#": "POWERING_UP",
    "!": "POWER_DOWN",
    "%": "POWERING_DOWN",
    "$": "MAINTENANCE",
    "@": "REBOOT_REQUESTED",
    "^": "REBOOT_ISSUED",
    "-": "PLANNED",
}
# Flags that make a node unusable for new work.
_UNUSABLE = frozenset(
    {
        "DRAIN",
        "FAIL",
        "NOT_RESPONDING",
        "MAINTENANCE",
        "POWERED_DOWN",
        "INVALID_REG",
        "REBOOT_ISSUED",
    }
)


@dataclass(frozen=True)
class NodeStatus:
    """A node's base state and its flags (``DRAIN``, ``NOT_RESPONDING``...)."""

    state: NodeState
    flags: frozenset[str] = frozenset()

    @property
    def responding(self) -> bool:
        return "NOT_RESPONDING" not in self.flags

    @property
    def usable(self) -> bool:
        """Can take new work now."""
        return self.state not in (
            NodeState.DOWN,
            NodeState.UNKNOWN,
            NodeState.FUTURE,
            NodeState.ERROR,
        ) and not (self.flags & _UNUSABLE)

    @property
    def failed(self) -> bool:
        """Down, failing or not responding: work on it is being lost."""
        return self.state is NodeState.DOWN or bool(self.flags & {"FAIL", "NOT_RESPONDING"})

    def __str__(self) -> str:
        return "+".join([self.state.value, *sorted(self.flags)])


def parse_node_state(value: str | Iterable[str] | None) -> NodeStatus:
    """``"idle"``, ``"down*"``, ``"IDLE+DRAIN"``, ``"drng"``, ``["IDLE", "DRAIN"]`` → NodeStatus."""
    if value is None:
        return NodeStatus(NodeState.UNKNOWN)
    parts: list[str] = []
    if isinstance(value, str):
        parts = [p for p in value.strip().upper().split("+") if p]
    else:
        parts = [str(v).strip().upper() for v in value if str(v).strip()]
    flags: set[str] = set()
    base: NodeState | None = None
    for raw in parts:
        word = raw
        while word and word[-1] in _SUFFIX_FLAGS:
            flags.add(_SUFFIX_FLAGS[word[-1]])
            word = word[:-1]
        if word in NodeState.__members__:
            if base is None:
                base = NodeState[word]
            continue
        if word in _NODE_ALIASES:
            alias_base, alias_flags = _NODE_ALIASES[word]
            flags.update(alias_flags)
            if base is None:
                base = NodeState[alias_base]
            continue
        if word in {"NOT_RESPONDING", "NO_RESPOND"}:
            flags.add("NOT_RESPONDING")
        elif word:
            flags.add(word)
    return NodeStatus(base or NodeState.UNKNOWN, frozenset(flags))

"""What a Slurm client returns: frozen records of jobs, nodes, partitions and steps.

Every backend (REST, CLI, pyslurm, fake) produces these same records, so the
monitor and the policies never see a backend's JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hpcorch.slurm.states import FailureClass, JobState, NodeStatus, classify_failure

__all__ = ["JobInfo", "NodeInfo", "PartitionInfo", "StepInfo", "in_partitions", "pending_in"]


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One job as Slurm reports it. Times are Unix seconds (None: not yet)."""

    job_id: str
    state: JobState
    name: str = ""
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    nodes: tuple[str, ...] = ()
    partition: str | None = None
    submit: float | None = None
    start: float | None = None
    end: float | None = None
    node_count: int | None = None
    cpus: int | None = None
    user: str | None = None
    account: str | None = None
    comment: str | None = None
    time_limit_s: float | None = None
    source: str = ""

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @property
    def failure(self) -> FailureClass | None:
        """Why the job failed (None: succeeded or still going)."""
        return classify_failure(self.state, self.reason, self.exit_code, self.signal)

    def same_outcome(self, other: JobInfo) -> bool:
        """Backends agree on a job when state, exit status and nodes agree."""
        return (self.job_id, self.state, self.exit_code, self.nodes) == (
            other.job_id,
            other.state,
            other.exit_code,
            other.nodes,
        )


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node: its state and flags, shape, and what is allocated on it."""

    name: str
    status: NodeStatus
    partitions: tuple[str, ...] = ()
    cpus: int = 0
    sockets: int = 1
    cores_per_socket: int = 1
    threads_per_core: int = 1
    memory: int = 0
    alloc_cpus: int = 0
    alloc_memory: int = 0
    gres: str = ""
    gres_used: str = ""
    reason: str | None = None

    @property
    def usable(self) -> bool:
        return self.status.usable

    @property
    def failed(self) -> bool:
        return self.status.failed


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    name: str
    nodes: tuple[str, ...]
    default: bool = False
    state: str = "UP"
    max_time_s: float | None = None
    max_nodes_per_job: int | None = None
    total_cpus: int | None = None


@dataclass(frozen=True, slots=True)
class StepInfo:
    job_id: str
    step_id: str
    name: str
    state: JobState
    exit_code: int | None = None
    signal: int | None = None
    nodes: tuple[str, ...] = ()


def in_partitions(nodes: Iterable[NodeInfo], partitions: Iterable[str] | None) -> list[NodeInfo]:
    """The nodes in any of ``partitions`` (None: all), for backends that cannot filter."""
    if partitions is None:
        return list(nodes)
    wanted = set(partitions)
    return [n for n in nodes if wanted.intersection(n.partitions)]


def pending_in(jobs: Iterable[JobInfo], partition: str) -> list[JobInfo]:
    """The pending jobs of ``partition``, for backends that cannot filter."""
    return [j for j in jobs if j.partition == partition and j.state is JobState.PENDING]

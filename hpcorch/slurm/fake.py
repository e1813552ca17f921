"""An in-memory Slurm for unit tests: the client protocol over a dict, with state you drive.

    fake = FakeSlurm(nodes={"cpu1": "cpu", "gpu1": "gpu"})
    client = fake.client()
    job = client.submit(JobRequest(command="true"))
    fake.start(job, "cpu1")          # PENDING -> RUNNING on cpu1
    fake.finish(job, exit_code=3)    # -> FAILED, exit 3
    fake.fail_node("cpu1")           # running jobs there -> NODE_FAIL; node DOWN*
    fake.down = True                 # every call raises BackendDown (slurmctld away)

``fake.calls`` counts calls by method, so tests can check that a poller makes
one call per interval however many jobs it watches.

With ``behaviour`` set, the fake also runs jobs by itself, one step per
``jobs()`` call: a pending job (not held) starts, then ends as the behaviour
says (:class:`Outcome`), e.g. "exit 3" → FAILED with exit code 3.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from hpcorch.errors import SlurmError, SubmissionRefused
from hpcorch.slurm.client import BackendDown
from hpcorch.slurm.models import (
    JobInfo,
    NodeInfo,
    PartitionInfo,
    StepInfo,
    in_partitions,
    pending_in,
)
from hpcorch.slurm.script import JobRequest, request_from_script
from hpcorch.slurm.states import JobState, NodeState, NodeStatus

__all__ = ["FakeClient", "FakeSlurm", "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """How an automatically run job ends (None state: it keeps running)."""

    state: JobState | None
    exit_code: int = 0
    reason: str | None = None


_GIB = 1024**3


class FakeSlurm:
    """The cluster: jobs, nodes, partitions, and knobs to change them."""

    def __init__(
        self,
        nodes: Mapping[str, str] | None = None,
        *,
        version: str = "22.05.8",
        clock: float = 1_700_000_000.0,
        behaviour: Callable[[JobRequest], Outcome] | None = None,
    ) -> None:
        self.version = version
        self.behaviour = behaviour
        self.now = clock
        self.down = False
        self.calls: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.jobs: dict[str, JobInfo] = {}
        self.requests: dict[str, JobRequest] = {}
        layout = nodes or {"cpu1": "cpu", "cpu2": "cpu", "gpu1": "gpu", "gpu2": "gpu"}
        self.nodes: dict[str, NodeInfo] = {
            name: NodeInfo(
                name=name,
                status=NodeStatus(NodeState.IDLE),
                partitions=(part,),
                cpus=8,
                sockets=2,
                cores_per_socket=4,
                memory=8 * _GIB,
                gres="gpu:sim:4(S:0-1)" if part == "gpu" else "",
            )
            for name, part in layout.items()
        }
        first = next(iter(layout.values()))
        self.partitions = [
            PartitionInfo(
                name=part,
                nodes=tuple(n for n, p in layout.items() if p == part),
                default=part == first,
            )
            for part in dict.fromkeys(layout.values())
        ]

    def client(self) -> FakeClient:
        return FakeClient(self)

    # ------------------------------------------------------------------ knobs

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds

    def set_state(self, job_id: str, state: JobState, **changes: object) -> JobInfo:
        """Put a job in any state (fields such as exit_code, nodes, reason may change too)."""
        with self._lock:
            job = self.jobs[job_id]
            updated = replace(job, state=state, **changes)  # type: ignore[arg-type]
            if state.terminal and updated.end is None:
                updated = replace(updated, end=self.now)
            self.jobs[job_id] = updated
            return updated

    def start(self, job_id: str, *nodes: str) -> JobInfo:
        chosen = nodes or (self.partition_nodes(self.jobs[job_id].partition)[0],)
        return self.set_state(job_id, JobState.RUNNING, nodes=tuple(chosen), start=self.now)

    def finish(self, job_id: str, exit_code: int = 0, signal: int | None = None) -> JobInfo:
        state = JobState.COMPLETED if exit_code == 0 and signal is None else JobState.FAILED
        reason = None if state is JobState.COMPLETED else "NonZeroExitCode"
        return self.set_state(job_id, state, exit_code=exit_code, signal=signal, reason=reason)

    def timeout(self, job_id: str) -> JobInfo:
        return self.set_state(
            job_id, JobState.TIMEOUT, exit_code=0, signal=None, reason="TimeLimit"
        )

    def fail_node(self, name: str) -> None:
        """The node stops responding: its running jobs end NODE_FAIL."""
        with self._lock:
            self.nodes[name] = replace(
                self.nodes[name],
                status=NodeStatus(NodeState.DOWN, frozenset({"NOT_RESPONDING"})),
                reason="Not responding",
            )
        for job in list(self.jobs.values()):
            if name in job.nodes and job.state.active:
                self.set_state(job.job_id, JobState.NODE_FAIL, exit_code=0, reason="NodeDown")

    def heal_node(self, name: str) -> None:
        with self._lock:
            self.nodes[name] = replace(
                self.nodes[name], status=NodeStatus(NodeState.IDLE), reason=None
            )

    def partition_nodes(self, partition: str | None) -> tuple[str, ...]:
        for part in self.partitions:
            if part.name == partition or (partition is None and part.default):
                return part.nodes
        return tuple(self.nodes)

    def step(self) -> None:
        """Advance every job one step as ``behaviour`` says (start, then end)."""
        if self.behaviour is None:
            return
        for job in list(self.jobs.values()):
            req = self.requests[job.job_id]
            if job.state is JobState.PENDING and not req.hold:
                node = req.nodelist[0] if req.nodelist else None
                if node is None or self.nodes[node].usable:
                    self.start(job.job_id, *(req.nodelist[:1]))
            elif job.state is JobState.RUNNING:
                outcome = self.behaviour(req)
                if outcome.state is not None:
                    self.set_state(
                        job.job_id,
                        outcome.state,
                        exit_code=outcome.exit_code,
                        reason=outcome.reason,
                    )

    # ------------------------------------------------------------------ used by the client

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self.down:
            raise BackendDown("fake slurmctld is down")

    def _submit(self, req: JobRequest) -> str:
        names = {p.name for p in self.partitions}
        if req.partition is not None and req.partition not in names:
            raise SubmissionRefused(
                f"sbatch refused the job: Invalid partition name specified ({req.partition})"
            )
        with self._lock:
            job_id = str(next(self._ids))
            self.requests[job_id] = req
            self.jobs[job_id] = JobInfo(
                job_id=job_id,
                state=JobState.PENDING,
                name=req.name,
                reason="JobHeldUser" if req.hold else "None",
                partition=req.partition or self.partitions[0].name,
                submit=self.now,
                time_limit_s=req.time_s,
                comment=req.comment,
                source="fake",
            )
        return job_id


class FakeClient:
    """The :class:`~hpcorch.slurm.client.SlurmClient` protocol over a :class:`FakeSlurm`."""

    name = "fake"

    def __init__(self, cluster: FakeSlurm) -> None:
        self.cluster = cluster

    @property
    def version(self) -> str:
        self.cluster._enter("version")
        return self.cluster.version

    def submit(self, job: JobRequest | str) -> str:
        self.cluster._enter("submit")
        if isinstance(job, str):
            try:
                job = request_from_script(job)
            except ValueError as exc:
                raise SubmissionRefused(str(exc)) from None
        return self.cluster._submit(job)

    def cancel(self, job_ids: Iterable[str]) -> None:
        self.cluster._enter("cancel")
        for job_id in job_ids:
            job = self.cluster.jobs.get(str(job_id))
            if job is not None and not job.terminal:
                self.cluster.set_state(job.job_id, JobState.CANCELLED, reason="None", exit_code=0)

    def jobs(self, job_ids: Iterable[str]) -> list[JobInfo]:
        self.cluster._enter("jobs")
        self.cluster.step()
        wanted = [str(j) for j in job_ids]
        return [self.cluster.jobs[j] for j in wanted if j in self.cluster.jobs]

    def nodes(self, partitions: Iterable[str] | None = None) -> list[NodeInfo]:
        self.cluster._enter("nodes")
        return in_partitions(self.cluster.nodes.values(), partitions)

    def pending_jobs(self, partition: str) -> list[JobInfo]:
        self.cluster._enter("pending_jobs")
        return pending_in(self.cluster.jobs.values(), partition)

    def start_estimate(self, partition: str, nodes: int, walltime_s: float) -> float | None:
        self.cluster._enter("start_estimate")
        return None

    def partitions(self) -> list[PartitionInfo]:
        self.cluster._enter("partitions")
        return list(self.cluster.partitions)

    def steps(self, job_id: str) -> list[StepInfo]:
        self.cluster._enter("steps")
        job = self.cluster.jobs.get(str(job_id))
        if job is None:
            raise SlurmError(f"fake: no job {job_id}")
        if job.state is JobState.PENDING:
            return []
        return [
            StepInfo(job.job_id, "batch", "batch", job.state, job.exit_code, job.signal, job.nodes)
        ]

    def close(self) -> None:
        return None

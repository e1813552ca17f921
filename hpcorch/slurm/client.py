"""The one Slurm client protocol every backend implements.

    client.submit(JobRequest | script text) -> job id
    client.cancel(job ids)
    client.jobs(job ids) -> [JobInfo]      one call for all of them
    client.nodes(partitions) -> [NodeInfo] one call; None: every node
    client.pending_jobs(partition) -> [JobInfo]   every user's, for queue probes
    client.start_estimate(partition, nodes, walltime) -> Unix time | None
    client.partitions() -> [PartitionInfo]
    client.steps(job id) -> [StepInfo]
    client.version -> "22.05.8"

Backends: :mod:`~hpcorch.slurm.rest` (slurmrestd), :mod:`~hpcorch.slurm.cli`
(``squeue``/``sinfo`` for this user's jobs and the partitions in use,
``sbatch --parsable``), :mod:`~hpcorch.slurm.pyslurm_` and :mod:`~hpcorch.slurm.fake`;
:mod:`~hpcorch.slurm.fallback` chains them.
Every foreign error is translated to :class:`~hpcorch.errors.SlurmError` at
the backend's boundary.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from hpcorch.errors import SlurmError
from hpcorch.slurm.models import JobInfo, NodeInfo, PartitionInfo, StepInfo
from hpcorch.slurm.script import JobRequest

__all__ = ["BackendDown", "SlurmClient"]


class BackendDown(SlurmError):
    """The backend could not be reached; the request was never delivered.

    Only this error lets the fallback retry a submission on another backend:
    any other failure may have reached slurmctld, and submitting again could
    start the job twice.
    """


class SlurmClient(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def submit(self, job: JobRequest | str) -> str: ...

    def cancel(self, job_ids: Iterable[str]) -> None: ...

    def jobs(self, job_ids: Iterable[str]) -> list[JobInfo]: ...

    def nodes(self, partitions: Iterable[str] | None = None) -> list[NodeInfo]: ...

    def pending_jobs(self, partition: str) -> list[JobInfo]: ...

    def start_estimate(self, partition: str, nodes: int, walltime_s: float) -> float | None: ...

    def partitions(self) -> list[PartitionInfo]: ...

    def steps(self, job_id: str) -> list[StepInfo]: ...

    def close(self) -> None: ...

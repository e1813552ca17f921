"""The pyslurm backend: loaded only when pyslurm is installed and matches the site's Slurm.

pyslurm links against libslurm and must match its major.minor release
exactly; anything else raises :class:`~hpcorch.errors.BackendUnavailable`
naming both versions. (No pyslurm release matches Slurm 22.05 for Python
3.11, so on the dev cluster this backend reports itself unavailable and the
REST and CLI backends carry the work.)
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from hpcorch.errors import BackendUnavailable, SlurmError
from hpcorch.slurm.models import (
    JobInfo,
    NodeInfo,
    PartitionInfo,
    StepInfo,
    in_partitions,
    pending_in,
)
from hpcorch.slurm.parse import expand_hostlist
from hpcorch.slurm.script import JobRequest, render_sbatch
from hpcorch.slurm.states import parse_job_state, parse_node_state

__all__ = ["PyslurmClient", "check_versions", "load_pyslurm"]


def _major_minor(version: str) -> tuple[int, int] | None:
    parts = [p for p in version.replace("-", ".").split(".") if p.isdigit()]
    if len(parts) < 2:
        return None
    major, minor = int(parts[0]), int(parts[1])
    # pyslurm writes 22.05 as 22.5; Slurm as 22.05: compare as numbers.
    return major, minor


def check_versions(pyslurm_version: str, slurm_version: str) -> None:
    """Raise BackendUnavailable unless both are the same Slurm major.minor."""
    mine, theirs = _major_minor(pyslurm_version), _major_minor(slurm_version)
    if mine is None or theirs is None or mine != theirs:
        raise BackendUnavailable(
            f"pyslurm {pyslurm_version} is built for Slurm {mine[0] if mine else '?'}."
            f"{mine[1] if mine else '?'}, but this site runs Slurm {slurm_version}: install "
            f"the pyslurm release for Slurm {slurm_version}, or use the rest or cli backend"
        )


def load_pyslurm(slurm_version: str) -> ModuleType:
    """Import pyslurm if installed and matching ``slurm_version``."""
    try:
        module = importlib.import_module("pyslurm")
    except ImportError as exc:
        raise BackendUnavailable(
            f"pyslurm is not installed (this site runs Slurm {slurm_version}); install the "
            "matching release (pip install 'hpcorch[pyslurm]'), or use the rest or cli backend"
        ) from exc
    version = str(getattr(module, "__version__", "") or "unknown")
    check_versions(version, slurm_version)
    return module


class PyslurmClient:
    """Slurm through pyslurm's classic API (``pyslurm.job``, ``node``, ``partition``)."""

    name = "pyslurm"

    def __init__(self, slurm_version: str, module: ModuleType | None = None) -> None:
        self._slurm_version = slurm_version
        self._mod = module or load_pyslurm(slurm_version)

    def _guard(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (ValueError, RuntimeError, OSError) as exc:
            raise SlurmError(f"pyslurm {what} failed: {exc}") from exc

    @property
    def version(self) -> str:
        return self._slurm_version

    def submit(self, job: JobRequest | str) -> str:
        script = render_sbatch(job) if isinstance(job, JobRequest) else job
        desc = self._mod.JobSubmitDescription(script=script)  # pyslurm >= 23
        return str(self._guard("submit", desc.submit))

    def cancel(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            self._guard("cancel", self._mod.slurm_kill_job, int(job_id), 9, 0)

    def jobs(self, job_ids: Iterable[str]) -> list[JobInfo]:
        wanted = {str(j) for j in job_ids}
        return [j for j in self._jobs() if j.job_id in wanted]

    def _jobs(self) -> list[JobInfo]:
        table: Mapping[Any, Mapping[str, Any]] = self._guard("job info", self._mod.job().get)
        out = []
        for key, job in table.items():
            code, _, sig = str(job.get("exit_code") or "0:0").partition(":")
            state = parse_job_state(job.get("job_state"))
            out.append(
                JobInfo(
                    job_id=str(key),
                    state=state,
                    name=str(job.get("name") or ""),
                    reason=job.get("state_reason"),
                    exit_code=int(code) if state.terminal and code.isdigit() else None,
                    signal=int(sig) if state.terminal and sig.isdigit() and int(sig) else None,
                    nodes=expand_hostlist(job.get("nodes")),
                    partition=job.get("partition"),
                    source="pyslurm",
                )
            )
        return out

    def nodes(self, partitions: Iterable[str] | None = None) -> list[NodeInfo]:
        table: Mapping[str, Mapping[str, Any]] = self._guard("node info", self._mod.node().get)
        return in_partitions(self._nodes(table), partitions)

    def pending_jobs(self, partition: str) -> list[JobInfo]:
        return pending_in(self._jobs(), partition)

    def start_estimate(self, partition: str, nodes: int, walltime_s: float) -> float | None:
        return None  # no --test-only through pyslurm: the region policy goes without

    def _nodes(self, table: Mapping[str, Mapping[str, Any]]) -> list[NodeInfo]:
        return [
            NodeInfo(
                name=name,
                status=parse_node_state(node.get("state")),
                partitions=tuple(node.get("partitions") or ()),
                cpus=int(node.get("cpus") or 0),
                sockets=int(node.get("sockets") or 1),
                cores_per_socket=int(node.get("cores") or 1),
                memory=int(node.get("real_memory") or 0) * 1024**2,
            )
            for name, node in table.items()
        ]

    def partitions(self) -> list[PartitionInfo]:
        table: Mapping[str, Mapping[str, Any]] = self._guard(
            "partition info", self._mod.partition().get
        )
        return [
            PartitionInfo(name=name, nodes=expand_hostlist(p.get("nodes")))
            for name, p in table.items()
        ]

    def steps(self, job_id: str) -> list[StepInfo]:
        raise SlurmError("the pyslurm backend does not list steps; configure the cli backend too")

    def close(self) -> None:
        return None

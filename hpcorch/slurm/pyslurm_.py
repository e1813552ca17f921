"""The pyslurm backend: Slurm's C API through pyslurm's object API (pyslurm >= 23.2).

pyslurm links against libslurm and must match its major.minor release
exactly; anything else raises :class:`~hpcorch.errors.BackendUnavailable`
naming both versions and the fix. PyPI has no pyslurm for Slurm 22.05 or
24.11; on 24.11 hpcorch builds one from PySlurm's ``24.11.x`` branch
(``scripts/pyslurm-wheel``).

Submissions set every field of ``pyslurm.JobSubmitDescription`` explicitly
from the :class:`~hpcorch.slurm.script.JobRequest` (a script's ``#SBATCH``
lines are read with the same parser the REST backend uses, and an option it
cannot pass is refused, never dropped). pyslurm's own
``load_sbatch_options`` is not used: it reads only a script *file*, splits
``--comment='a b'`` wrongly, and maps ``--partition`` to an attribute the
description does not have. Live jobs come from ``pyslurm.Jobs.load()``, nodes
from ``pyslurm.Nodes.load()``, partitions from ``pyslurm.Partitions.load()``,
and jobs slurmctld has forgotten from ``pyslurm.db.Jobs.load`` by job id.
"""

from __future__ import annotations

import importlib
import math
import os
import signal as _signal
import time
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from hpcorch.errors import BackendUnavailable, SlurmError, SubmissionRefused
from hpcorch.slurm.hostlists import expand_hostlist
from hpcorch.slurm.models import (
    JobInfo,
    NodeInfo,
    PartitionInfo,
    StepInfo,
    in_partitions,
    pending_in,
)
from hpcorch.slurm.parse import job_id_order
from hpcorch.slurm.rest_dialects import PLAIN_FIELDS, begin_time, job_environment, parse_signal
from hpcorch.slurm.script import JobRequest, render_sbatch, request_from_script
from hpcorch.slurm.states import parse_job_state, parse_node_state

__all__ = ["PyslurmClient", "check_versions", "load_pyslurm", "submit_description"]

_MIB = 1024**2


def _major_minor(version: str) -> tuple[int, int] | None:
    parts = [p for p in version.replace("-", ".").split(".") if p.isdigit()]
    if len(parts) < 2:
        return None
    # pyslurm writes 22.05 as 22.5; Slurm as 22.05: compare as numbers.
    return int(parts[0]), int(parts[1])


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
            "matching release (pip install 'hpcorch[pyslurm]'; for Slurm 24.11 build it with "
            "scripts/pyslurm-wheel), or use the rest or cli backend"
        ) from exc
    version = str(getattr(module, "__version__", "") or "unknown")
    check_versions(version, slurm_version)
    if not hasattr(module, "JobSubmitDescription"):
        raise BackendUnavailable(
            f"pyslurm {version} has no JobSubmitDescription (pyslurm >= 23.2 needed); "
            "use the rest or cli backend"
        )
    return module


def submit_description(
    req: JobRequest, script: str, env: Mapping[str, str], cwd: str, now: float | None = None
) -> dict[str, Any]:
    """Keyword arguments of ``pyslurm.JobSubmitDescription`` for ``req`` (pure).

    Times are whole minutes and memory MiB as integers: pyslurm 24.11 raises
    TypeError on a time limit given as the string "5".
    """
    if req.extra:
        raise SubmissionRefused(
            f"the pyslurm backend cannot pass sbatch options {list(req.extra)}; use the cli backend"
        )
    kw: dict[str, Any] = {
        "name": req.name,
        "script": script,
        "working_directory": req.chdir or cwd,
        "environment": job_environment(req, env),
    }

    def put(key: str, value: Any) -> None:
        if value is not None and value not in ((), []):
            kw[key] = value

    for attr, (_, key) in PLAIN_FIELDS.items():
        put(key, getattr(req, attr))
    put("nodes", req.nodes)
    if req.mem is not None:
        # pyslurm skips a falsy memory; "0" (all of the node's memory, as --mem=0) is not.
        kw["memory_per_node"] = math.ceil(req.mem / _MIB) or "0"
    put("memory_per_cpu", math.ceil(req.mem_per_cpu / _MIB) if req.mem_per_cpu else None)
    put("gres_per_node", req.gres)
    put("time_limit", math.ceil(req.time_s / 60) if req.time_s else None)
    put("required_nodes", list(req.nodelist))
    put("excluded_nodes", list(req.exclude))
    if req.exclusive:
        kw["resource_sharing"] = "no"  # what sbatch --exclusive sets
    if req.signal:
        where, sig, delay = parse_signal(req.signal)
        try:
            number = int(sig) if sig.isdigit() else int(_signal.Signals[f"SIG{sig.upper()}"])
        except KeyError:
            raise SubmissionRefused(f"signal={req.signal!r}: unknown signal {sig!r}") from None
        kw["signal"] = {
            "signal": number,
            "time": delay,
            "batch_only": where == "B",
            "allow_reservation_overlap": where == "R",
        }
    if req.hold:
        kw["priority"] = 0  # what sbatch --hold sends
    if req.begin:
        kw["begin_time"] = begin_time(req.begin, time.time() if now is None else now)
    return kw


def _gres_text(value: Any) -> str:
    """pyslurm's GRES dict ({"gpu:sim": 4}) in Slurm's text form ("gpu:sim:4")."""
    if isinstance(value, Mapping):
        return ",".join(f"{name}:{count}" for name, count in value.items())
    return str(value or "")


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _minutes_s(value: Any) -> float | None:
    return float(value) * 60.0 if isinstance(value, int) and value > 0 else None


class PyslurmClient:
    """Slurm through pyslurm: ``Jobs``, ``Nodes``, ``Partitions``, ``db.Jobs``."""

    name = "pyslurm"

    def __init__(
        self,
        slurm_version: str,
        module: ModuleType | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._slurm_version = slurm_version
        self._mod = module or load_pyslurm(slurm_version)
        self._env = os.environ if env is None else env

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, RuntimeError, OSError) as exc:
            raise SlurmError(f"pyslurm {what} failed: {exc}") from exc
        except Exception as exc:
            # pyslurm.RPCError derives from PyslurmError(Exception); name it plainly.
            if type(exc).__name__ in ("RPCError", "PyslurmError"):
                raise SlurmError(f"pyslurm {what} failed: {exc}") from exc
            raise

    @property
    def version(self) -> str:
        return self._slurm_version

    def submit(self, job: JobRequest | str) -> str:
        if isinstance(job, JobRequest):
            req, script = job, render_sbatch(job)
        else:
            try:
                req, script = request_from_script(job), job
            except ValueError as exc:
                raise SubmissionRefused(str(exc)) from None
        kw = submit_description(req, script, self._env, os.getcwd())
        try:
            desc = self._mod.JobSubmitDescription(**kw)
            job_id = desc.submit()
        except Exception as exc:
            raise SubmissionRefused(f"Slurm refused the job (pyslurm): {exc}") from exc
        return str(job_id)

    def cancel(self, job_ids: Iterable[str]) -> None:
        ids = [str(j) for j in job_ids]
        arrays = [j for j in ids if "_" in j]
        own = {job_id: job_id for job_id in ids if "_" not in job_id}
        if arrays:
            # An array task has its own job id; pyslurm cancels by that id.
            for key, live in self._live().items():
                if key in arrays:
                    own[key] = str(live.id)
        for job_id in own.values():
            self._guard(f"cancel of job {job_id}", self._mod.Job(int(job_id)).cancel)

    def _live(self) -> dict[str, Any]:
        jobs = self._guard("Jobs.load", self._mod.Jobs.load)
        out = {}
        for job in jobs.values():
            task = job.array_task_id
            key = f"{job.array_id}_{task}" if job.array_id and task is not None else str(job.id)
            out[key] = job
        return out

    def jobs(self, job_ids: Iterable[str]) -> list[JobInfo]:
        wanted = {str(j) for j in job_ids}
        if not wanted:
            return []
        live = self._live()
        result = [self._job_info(live[j], j) for j in wanted if j in live]
        missing = wanted - live.keys()
        if missing:
            result += self._accounted(missing)
        return sorted(result, key=lambda j: job_id_order(j.job_id))

    def _job_info(self, job: Any, job_id: str, source: str = "pyslurm") -> JobInfo:
        state = parse_job_state(job.state)
        terminal = state.terminal
        signal = (job.exit_code_signal or None) if terminal else None
        nodes = getattr(job, "allocated_nodes", None) if source == "pyslurm" else job.nodelist
        return JobInfo(
            job_id=job_id,
            state=state,
            name=str(job.name or ""),
            reason=job.state_reason if job.state_reason not in (None, "None") else None,
            # A signalled job has no exit code, as squeue/slurmrestd (24.11) report it.
            exit_code=job.exit_code if terminal and signal is None else None,
            signal=signal,
            nodes=expand_hostlist(nodes),
            partition=job.partition,
            submit=_seconds(job.submit_time),
            start=_seconds(job.start_time),
            end=_seconds(job.end_time) if terminal else None,
            node_count=job.num_nodes,
            cpus=job.cpus,
            user=job.user_name,
            account=job.account,
            comment=job.comment if source == "pyslurm" else None,
            time_limit_s=_minutes_s(job.time_limit),
            source=source,
        )

    def _accounted(self, job_ids: set[str]) -> list[JobInfo]:
        """Jobs slurmctld has forgotten, from slurmdbd by id (one RPC)."""
        numeric = [int(j) for j in job_ids if j.isdigit()]
        if not numeric:
            return []
        db = self._mod.db
        found = self._guard("db.Jobs.load", db.Jobs.load, db.JobFilter(ids=numeric))
        latest: dict[str, Any] = {}
        for job in found.values():
            key = str(job.id)
            # Job ids restart when slurmctld's state is wiped; the newest is the one asked about.
            if key in job_ids and (
                key not in latest or (job.submit_time or 0) >= (latest[key].submit_time or 0)
            ):
                latest[key] = job
        return [self._job_info(job, key, source="pyslurm-db") for key, job in latest.items()]

    def pending_jobs(self, partition: str) -> list[JobInfo]:
        live = [self._job_info(job, key) for key, job in self._live().items()]
        return pending_in(live, partition)

    def start_estimate(self, partition: str, nodes: int, walltime_s: float) -> float | None:
        return None  # no --test-only through pyslurm: the region policy goes without

    def nodes(self, partitions: Iterable[str] | None = None) -> list[NodeInfo]:
        nodes = self._guard("Nodes.load", self._mod.Nodes.load)
        return in_partitions(self._nodes(nodes), partitions)

    def _nodes(self, nodes: Any) -> list[NodeInfo]:
        return [
            NodeInfo(
                name=str(node.name),
                status=parse_node_state(node.state),
                partitions=tuple(node.partitions or ()),
                # pyslurm 24.11 names the CPU count total_cpus.
                cpus=int(node.total_cpus or 0),
                sockets=int(node.sockets or 1),
                cores_per_socket=int(node.cores_per_socket or 1),
                threads_per_core=int(node.threads_per_core or 1),
                memory=int(node.real_memory or 0) * _MIB,
                alloc_cpus=int(node.allocated_cpus or 0),
                alloc_memory=int(node.allocated_memory or 0) * _MIB,
                gres=_gres_text(node.configured_gres),
                gres_used=_gres_text(node.allocated_gres),
                reason=node.reason,
            )
            for node in nodes.values()
        ]

    def partitions(self) -> list[PartitionInfo]:
        parts = self._guard("Partitions.load", self._mod.Partitions.load)
        out = []
        for part in parts.values():
            max_time = part.max_time
            out.append(
                PartitionInfo(
                    name=str(part.name),
                    nodes=expand_hostlist(part.nodes),
                    default=bool(part.is_default),
                    state=str(part.state or "UP"),
                    max_time_s=_minutes_s(max_time),
                    # pyslurm says "UNLIMITED" for no limit.
                    max_nodes_per_job=part.max_nodes if isinstance(part.max_nodes, int) else None,
                    total_cpus=part.total_cpus,
                )
            )
        return out

    def steps(self, job_id: str) -> list[StepInfo]:
        if not job_id.isdigit():
            raise SlurmError(f"the pyslurm backend lists steps by numeric job id, not {job_id!r}")
        job = self._guard("db.Job.load", self._mod.db.Job.load, int(job_id))
        return [
            StepInfo(
                job_id=job_id,
                step_id=str(step.id),
                name=str(step.name or ""),
                state=parse_job_state(step.state),
                exit_code=step.exit_code,
                signal=step.exit_code_signal or None,
                nodes=expand_hostlist(step.nodelist),
            )
            for step in job.steps.values()
        ]

    def close(self) -> None:
        return None

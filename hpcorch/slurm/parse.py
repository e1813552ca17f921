"""Pure parsers: Slurm's JSON and text output → hpcorch's records.

``squeue --json``, ``sinfo --json`` and slurmrestd's ``/jobs``, ``/nodes``
share one format per Slurm release (the openapi plugin dumps both); parsers
accept the 22.05 (v0.0.38) shapes and those of v0.0.39 and later: states as
lists, numbers as ``{"set", "infinite", "number"}``, exit codes as
``{"status", "return_code", "signal": {"id", "name"}}``, partitions nested
(``nodes.configured``, ``maximums.time``). Fixtures recorded from each
release (tests/unit/data/slurm-*) pin them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hpcorch.errors import SlurmError
from hpcorch.slurm.hostlists import expand_hostlist
from hpcorch.slurm.models import JobInfo, NodeInfo, PartitionInfo, StepInfo
from hpcorch.slurm.states import parse_job_state, parse_node_state
from hpcorch.units import parse_duration

__all__ = [
    "decode_wait_status",
    "expand_hostlist",
    "job_from_json",
    "job_id_order",
    "parse_jobs_json",
    "parse_nodes_json",
    "parse_partitions_json",
    "parse_sacct_json",
    "parse_sacct_steps",
    "parse_sbatch_parsable",
    "parse_scontrol_partitions",
    "parse_scontrol_token",
    "parse_sdiag_rpc_times",
    "parse_sdiag_rpcs",
    "slurm_errors",
]

_MIB = 1024**2
_INFINITE = 0xFFFFFFFE  # Slurm's NO_VAL/INFINITE for 32-bit fields


def decode_wait_status(value: Any) -> tuple[int | None, int | None]:
    """Slurm's exit status → (exit code, signal); a signalled job has no exit code.

    squeue/REST 22.05 give the raw wait status (exit 3 is ``768``, SIGTERM ``15``);
    sacct gives ``{"return_code": 3, "signal": {"signal_id": 0}}``, REST v0.0.40+
    ``{"return_code": {"set": false}, "signal": {"id": {"number": 15}}}`` for a
    signalled job. Like ``WIFSIGNALED``, a signal leaves the exit code None, so every
    backend and release reports a job killed by a signal the same way.
    """
    if value is None:
        return None, None
    if isinstance(value, Mapping):
        # 22.05 sacct: {"return_code": 3, "signal": {"signal_id": 0}}; v0.0.39+:
        # {"status": [...], "return_code": {"set", "number"}, "signal": {"id": {...}}}
        code = _int(value.get("return_code"))
        sig = value.get("signal")
        if isinstance(sig, Mapping):
            sig = sig.get("signal_id", sig.get("id"))
        sig_id = _int(sig)
        return (None, sig_id) if sig_id else (code, None)
    raw = int(value)
    signal = raw & 0x7F
    return (None, signal) if signal else (raw >> 8, None)


def _unwrap(value: Any) -> Any:
    """v0.0.39+ ``{"set": true, "infinite": false, "number": N}`` → N; unset/infinite → None."""
    if isinstance(value, Mapping):
        if not value.get("set", True) or value.get("infinite"):
            return None
        return value.get("number")
    return value


def _time(value: Any) -> float | None:
    value = _unwrap(value)
    if not isinstance(value, int | float) or value <= 0 or value >= _INFINITE:
        return None
    return float(value)


def _int(value: Any) -> int | None:
    value = _unwrap(value)
    if not isinstance(value, int) or value < 0 or value >= _INFINITE:
        return None
    return value


def _text(value: Any) -> str | None:
    if value in (None, "", "None", "(null)"):
        return None
    return str(value)


def job_from_json(job: Mapping[str, Any], source: str) -> JobInfo:
    """One job of ``squeue --json`` or slurmrestd ``/jobs``."""
    state = parse_job_state(job.get("job_state"))
    exit_code, signal = decode_wait_status(job.get("exit_code"))
    terminal = state.terminal
    limit = _int(job.get("time_limit"))
    return JobInfo(
        job_id=_job_id(job),
        state=state,
        name=str(job.get("name") or ""),
        reason=_text(job.get("state_reason")),
        # Slurm fills exit_code with 0 while a job runs; only an ended job has one.
        exit_code=exit_code if terminal else None,
        signal=signal if terminal else None,
        nodes=expand_hostlist(job.get("nodes")),
        partition=_text(job.get("partition")),
        submit=_time(job.get("submit_time")),
        start=_time(job.get("start_time")),
        end=_time(job.get("end_time")) if terminal else None,
        node_count=_int(job.get("node_count")),
        cpus=_int(job.get("cpus")),
        user=_text(job.get("user_name")),
        account=_text(job.get("account")),
        comment=_text(job.get("comment")),
        time_limit_s=limit * 60.0 if limit is not None else None,
        source=source,
    )


def _job_id(job: Mapping[str, Any]) -> str:
    array_id = _int(job.get("array_job_id"))
    task = _int(job.get("array_task_id"))
    if array_id and task is not None:
        return f"{array_id}_{task}"
    return str(job["job_id"])


def slurm_errors(data: Mapping[str, Any]) -> list[str]:
    """The ``errors`` of a Slurm JSON reply, as readable strings."""
    out = []
    for err in data.get("errors") or []:
        if isinstance(err, Mapping):
            text = err.get("description") or err.get("error") or str(err)
            number = err.get("error_number") or err.get("error_code")
            out.append(f"{text} (error {number})" if number else str(text))
        else:
            out.append(str(err))
    return out


def parse_jobs_json(data: Mapping[str, Any], source: str) -> list[JobInfo]:
    return [job_from_json(job, source) for job in data.get("jobs") or []]


def parse_sacct_json(data: Mapping[str, Any], source: str = "sacct") -> list[JobInfo]:
    """``sacct --json``: one record per job id, the latest submission winning.

    Job ids restart when a cluster's state is wiped while its database is kept,
    so the same id may appear more than once; the newest is the one asked about.
    """
    latest: dict[str, tuple[float, JobInfo]] = {}
    for job in data.get("jobs") or []:
        state_field = job.get("state") or {}
        state = parse_job_state(
            state_field.get("current") if isinstance(state_field, Mapping) else state_field
        )
        reason = state_field.get("reason") if isinstance(state_field, Mapping) else None
        exit_code, signal = decode_wait_status(job.get("exit_code"))
        times = job.get("time") or {}
        limit = times.get("limit")
        limit_min = _int(limit)
        array = job.get("array") or {}
        array_id, task = _int(array.get("job_id")), _int(array.get("task_id"))
        job_id = f"{array_id}_{task}" if array_id and task is not None else str(job["job_id"])
        info = JobInfo(
            job_id=job_id,
            state=state,
            name=str(job.get("name") or ""),
            reason=_text(reason),
            exit_code=exit_code if state.terminal else None,
            signal=signal if state.terminal else None,
            nodes=_sacct_nodes(job.get("nodes")),
            partition=_text(job.get("partition")),
            submit=_time(times.get("submission")),
            start=_time(times.get("start")),
            end=_time(times.get("end")) if state.terminal else None,
            user=_text(job.get("user")),
            account=_text(job.get("account")),
            comment=_text((job.get("comment") or {}).get("job"))
            if isinstance(job.get("comment"), Mapping)
            else _text(job.get("comment")),
            time_limit_s=limit_min * 60.0 if limit_min is not None else None,
            source=source,
        )
        submitted = info.submit or 0.0
        if job_id not in latest or submitted >= latest[job_id][0]:
            latest[job_id] = (submitted, info)
    return [info for _, info in latest.values()]


def _sacct_nodes(value: Any) -> tuple[str, ...]:
    # slurmdbd says "None assigned" for a job that never ran (held, then cancelled).
    return () if value in ("None assigned", "(null)") else expand_hostlist(value)


def parse_sacct_steps(data: Mapping[str, Any], job_id: str) -> list[StepInfo]:
    """The steps of one job from ``sacct --json -j ID`` (latest submission)."""
    records = [j for j in data.get("jobs") or [] if str(j.get("job_id")) == job_id]
    if not records:
        return []
    record = max(records, key=lambda j: (j.get("time") or {}).get("submission") or 0)
    steps = []
    for step in record.get("steps") or []:
        ident = step.get("step") or {}
        exit_code, signal = decode_wait_status(step.get("exit_code"))
        nodes = step.get("nodes") or {}
        # 22.05: "id": "batch" or 0; v0.0.39+: "id": "<job>.batch"
        step_id = str(ident.get("id", "")).removeprefix(f"{job_id}.")
        steps.append(
            StepInfo(
                job_id=job_id,
                step_id=step_id,
                name=str(ident.get("name") or ""),
                state=parse_job_state(step.get("state")),
                exit_code=exit_code,
                signal=signal,
                nodes=tuple(nodes.get("list") or expand_hostlist(nodes.get("range"))),
            )
        )
    return steps


def parse_nodes_json(data: Mapping[str, Any]) -> list[NodeInfo]:
    """``sinfo --json`` or slurmrestd ``/nodes``."""
    out = []
    for node in data.get("nodes") or []:
        state = node.get("state")
        flags = node.get("state_flags") or []
        parts: list[str] = [state] if isinstance(state, str) else list(state or [])
        out.append(
            NodeInfo(
                name=str(node["name"]),
                status=parse_node_state([*parts, *flags]),
                partitions=tuple(node.get("partitions") or ()),
                cpus=_int(node.get("cpus")) or 0,
                sockets=_int(node.get("sockets")) or 1,
                cores_per_socket=_int(node.get("cores")) or 1,
                threads_per_core=_int(node.get("threads")) or 1,
                memory=(_int(node.get("real_memory")) or 0) * _MIB,
                alloc_cpus=_int(node.get("alloc_cpus")) or 0,
                alloc_memory=(_int(node.get("alloc_memory")) or 0) * _MIB,
                gres=str(node.get("gres") or ""),
                gres_used=str(node.get("gres_used") or ""),
                reason=_text(node.get("reason")),
            )
        )
    return out


def parse_partitions_json(data: Mapping[str, Any]) -> list[PartitionInfo]:
    """slurmrestd ``/partitions``: v0.0.38's flat records or v0.0.39+'s nested ones."""
    out = []
    for part in data.get("partitions") or []:
        nested = isinstance(part.get("nodes"), Mapping)
        nodes = (part.get("nodes") or {}).get("configured") if nested else part.get("nodes")
        limits = part.get("maximums") or {}
        flags = part.get("flags") or []
        state = (part.get("partition") or {}).get("state") if nested else part.get("state")
        if isinstance(state, list):
            state = state[0] if state else None
        max_time = _int(limits.get("time") if nested else part.get("max_time_limit"))
        max_nodes = _int(limits.get("nodes") if nested else part.get("maximum_nodes_per_job"))
        cpus = (part.get("cpus") or {}).get("total") if nested else part.get("total_cpus")
        out.append(
            PartitionInfo(
                name=str(part["name"]),
                nodes=expand_hostlist(nodes),
                default="default" in [str(f).lower() for f in flags],
                state=str(state or "UP"),
                max_time_s=max_time * 60.0 if max_time else None,
                max_nodes_per_job=max_nodes or None,
                total_cpus=_int(cpus),
            )
        )
    return out


def _kv_line(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S*)", line))


def parse_scontrol_partitions(text: str) -> list[PartitionInfo]:
    """``scontrol show partition -o`` (one partition per line)."""
    out = []
    for line in text.splitlines():
        kv = _kv_line(line)
        if "PartitionName" not in kv:
            continue
        max_time = kv.get("MaxTime", "UNLIMITED")
        max_nodes = kv.get("MaxNodes", "UNLIMITED")
        out.append(
            PartitionInfo(
                name=kv["PartitionName"],
                nodes=expand_hostlist(kv.get("Nodes")),
                default=kv.get("Default") == "YES",
                state=kv.get("State", "UP"),
                max_time_s=None
                if max_time in ("UNLIMITED", "INFINITE")
                else parse_duration(max_time),
                max_nodes_per_job=int(max_nodes) if max_nodes.isdigit() else None,
                total_cpus=int(kv["TotalCPUs"]) if kv.get("TotalCPUs", "").isdigit() else None,
            )
        )
    return out


def parse_sbatch_parsable(stdout: str) -> str:
    """``sbatch --parsable`` prints ``JOBID`` or ``JOBID;CLUSTER``."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed no job id (got {line!r}); check the script and sbatch")
    return job_id


def parse_scontrol_token(stdout: str) -> str:
    """``scontrol token`` prints ``SLURM_JWT=<token>``."""
    for line in stdout.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key == "SLURM_JWT" and value:
            return value
    raise SlurmError("scontrol token printed no SLURM_JWT=...; is AuthAltTypes=auth/jwt set?")


_SDIAG_RPC = re.compile(
    r"^\s*(\w+)\s+\(\s*\d+\)\s+count:(\d+)\s+ave_time:\d+\s+total_time:(\d+)", re.MULTILINE
)


def parse_sdiag_rpcs(text: str) -> dict[str, int]:
    """RPC counts by message type from ``sdiag`` text (the by-type table only)."""
    return {name: count for name, (count, _) in parse_sdiag_rpc_times(text).items()}


def parse_sdiag_rpc_times(text: str) -> dict[str, tuple[int, int]]:
    """(count, total microseconds in slurmctld) by message type, from ``sdiag`` text."""
    section = text.split("Remote Procedure Call statistics by user", 1)[0]
    return {name: (int(n), int(us)) for name, n, us in _SDIAG_RPC.findall(section)}


def job_id_order(job_id: str) -> tuple[int, int]:
    """Sort key for job ids: numerically, array tasks after their parent."""
    head, _, task = job_id.partition("_")
    return (int(head) if head.isdigit() else 0, int(task) if task.isdigit() else -1)

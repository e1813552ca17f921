"""The CLI backend's polling queries: argv builders and parsers, pure, for 22.05 on.

A poll must cost slurmctld what the run's own jobs cost, not what the site's
queue costs. What each command asks slurmctld for (measured with ``sdiag``):

- ``squeue`` with several ``--jobs``, with ``--me`` or ``--user`` still loads
  every job in slurmctld (REQUEST_JOB_INFO), on 22.05 and on 24.11; only one id
  alone is cheap (REQUEST_JOB_INFO_SINGLE). ``squeue --json`` on 22.05 ignores
  the filters altogether.
- ``squeue --only-job-state --jobs=...`` (24.05 on) asks slurmctld for the
  states of exactly those jobs (REQUEST_JOB_STATE).
- ``sacct`` asks slurmdbd, not slurmctld.

So a poll is a *state sweep* of the run's jobs — ``squeue --only-job-state``
from 24.05 on, ``sacct --allocations`` before — and details (nodes, times,
exit status: ``squeue`` text with an ``--Format`` whose fields end with an
ASCII unit separator) only for the jobs whose state changed. A quiet poll
costs slurmctld nothing on 22.05 and one filtered RPC on 24.05+. Jobs gone
from squeue come from ``sacct --json``. Nodes come from ``sinfo --Node
--partition=...`` for the partitions the run uses.

Outputs differ too: squeue's ``exit_code`` is the raw wait status on 22.05
(``768``) and ``code:signal`` from 24.11 on (``3:0``). Checked on 22.05 and 24.11.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from hpcorch.slurm.models import JobInfo, NodeInfo
from hpcorch.slurm.parse import decode_wait_status, expand_hostlist
from hpcorch.slurm.states import JobState, parse_job_state, parse_node_state
from hpcorch.units import parse_duration

__all__ = [
    "JOB_GONE",
    "parse_sinfo_nodes",
    "parse_squeue_jobs",
    "parse_state_sweep",
    "parse_test_only",
    "release",
    "sacct_jobs_argv",
    "sinfo_nodes_argv",
    "squeue_jobs_argv",
    "squeue_pending_argv",
    "state_sweep_argv",
    "sweeps_in_slurmctld",
    "test_only_argv",
]

# Between fields: a byte no job or node name, partition or reason contains.
SEP = "\x1f"
# squeue's answer when the single job asked for has left slurmctld's memory.
JOB_GONE = "Invalid job id specified"

_JOB_FIELDS = (
    "JobArrayID",
    "State",
    "exit_code",
    "NumNodes",
    "NumCPUs",
    "TimeLimit",
    "SubmitTime",
    "StartTime",
    "EndTime",
    "Partition",
    "UserName",
    "Account",
    "NodeList",
    "Reason",
    "Name",
    "Comment",  # last: free text
)
_NODE_FIELDS = (
    "NodeList",
    "StateComplete",
    "Partition",
    "CPUs",
    "Sockets",
    "Cores",
    "Threads",
    "Memory",
    "CPUsState",
    "AllocMem",
    "Gres",
    "GresUsed",
    "Reason",  # last: free text
)
_MIB = 1024**2
_VERSION = re.compile(r"(\d+)\.(\d+)")
ONLY_JOB_STATE = (24, 5)  # squeue --only-job-state: REQUEST_JOB_STATE
_TEST_ONLY = re.compile(r"to start at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")


def _format(fields: Sequence[str]) -> str:
    # ``Field:0<suffix>``: no padding, the separator after each field.
    return ",".join(f"{name}:0{SEP}" for name in fields)


def release(version: str) -> tuple[int, int]:
    """``"22.05.8"`` or ``"slurm-wlm 24.11.5"`` → (22, 5); unreadable: the oldest supported."""
    found = _VERSION.search(version or "")
    return (int(found.group(1)), int(found.group(2))) if found else (22, 5)


def sweeps_in_slurmctld(rel: tuple[int, int]) -> bool:
    """Whether squeue can ask slurmctld for just these jobs' states (24.05 on)."""
    return rel >= ONLY_JOB_STATE


def state_sweep_argv(job_ids: Sequence[str], rel: tuple[int, int]) -> list[str]:
    """The states of these jobs, and nothing else: from slurmctld (24.05+) or slurmdbd."""
    ids = ",".join(job_ids)
    if sweeps_in_slurmctld(rel):
        return [
            "squeue",
            "--only-job-state",
            f"--jobs={ids}",
            "--states=all",
            "--noheader",
            f"--Format={_format(('JobID', 'State'))}",
        ]
    return [
        "sacct",
        f"--jobs={ids}",
        "--allocations",
        "--noheader",
        "--parsable2",
        "--format=JobID,State",
    ]


def parse_state_sweep(stdout: str) -> dict[str, JobState]:
    """Job id → state from :func:`state_sweep_argv`'s output (either form)."""
    states: dict[str, JobState] = {}
    for line in stdout.splitlines():
        job_id, _, rest = line.replace("|", SEP).partition(SEP)
        state = rest.split(SEP, 1)[0].strip()
        if job_id.strip() and state:
            states[job_id.strip()] = parse_job_state(state)  # sacct: the latest id wins
    return states


def squeue_jobs_argv(job_ids: Sequence[str]) -> list[str]:
    """squeue for these jobs' details, as text (``--json`` ignores the filter on 22.05)."""
    ids = ",".join(job_ids)
    return [
        "squeue",
        "--me",
        f"--jobs={ids}",
        "--states=all",
        "--noheader",
        f"--Format={_format(_JOB_FIELDS)}",
    ]


def squeue_pending_argv(partition: str) -> list[str]:
    """squeue for every user's pending jobs in one partition (a region's queue probe)."""
    return [
        "squeue",
        f"--partition={partition}",
        "--states=PENDING",
        "--noheader",
        f"--Format={_format(_JOB_FIELDS)}",
    ]


def test_only_argv(partition: str, nodes: int, walltime_s: float) -> list[str]:
    """``sbatch --test-only`` for a whole-node job of this shape: Slurm's start estimate."""
    return [
        "sbatch",
        "--test-only",
        f"--partition={partition}",
        f"--nodes={nodes}",
        "--exclusive",
        f"--time={max(1, math.ceil(walltime_s / 60))}",
        "--wrap=true",
    ]


def parse_test_only(output: str) -> float | None:
    """The Unix time ``sbatch --test-only`` says the job would start at (None: no estimate)."""
    found = _TEST_ONLY.search(output)
    return _when(found.group(1)) if found else None


def sacct_jobs_argv(job_ids: Sequence[str]) -> list[str]:
    """sacct for these jobs (slurmdbd): the ended ones and their exit status."""
    return ["sacct", "--json", f"--jobs={','.join(job_ids)}"]


def sinfo_nodes_argv(partitions: Iterable[str] | None) -> list[str]:
    """sinfo for the nodes of these partitions (None: every node), one line per node."""
    parts = sorted(set(partitions)) if partitions is not None else []
    return [
        "sinfo",
        "--Node",
        "--noheader",
        *([f"--partition={','.join(parts)}"] if parts else []),
        f"--Format={_format(_NODE_FIELDS)}",
    ]


def _fields(line: str, count: int) -> list[str] | None:
    values = line.removesuffix(SEP).split(SEP)  # every field, the last too, ends with SEP
    if len(values) < count:
        return None
    return [v.strip() for v in values[: count - 1]] + [SEP.join(values[count - 1 :]).strip()]


def _none(text: str) -> str | None:
    return None if text in ("", "N/A", "(null)", "None", "none") else text


def _count(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _when(text: str) -> float | None:
    # squeue prints local time, as datetime.timestamp() reads it.
    if _none(text) is None or text == "Unknown":
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def _limit(text: str) -> float | None:
    if _none(text) is None or text.upper() in ("UNLIMITED", "INFINITE", "NOT_SET"):
        return None
    try:
        return parse_duration(text)
    except ValueError:
        return None


def _exit_status(text: str) -> tuple[int | None, int | None]:
    # 22.05 prints the raw wait status ("768"), 24.11 on "code:signal" ("3:0").
    code, colon, sig = text.partition(":")
    if not colon:
        return decode_wait_status(_count(text))
    signal = _count(sig)
    return (None, signal) if signal else (_count(code), None)  # as decode_wait_status


def parse_squeue_jobs(stdout: str, source: str = "squeue") -> list[JobInfo]:
    """The jobs of :func:`squeue_jobs_argv`'s output."""
    jobs = []
    for line in stdout.splitlines():
        values = _fields(line, len(_JOB_FIELDS))
        if values is None:
            continue
        (job_id, state_text, exit_text, nodes, cpus, limit, submit, start, end,
         partition, user, account, nodelist, reason, name, comment) = values  # fmt: skip
        state = parse_job_state(state_text)
        terminal = state.terminal
        exit_code, signal = _exit_status(exit_text)
        jobs.append(
            JobInfo(
                job_id=job_id,
                state=state,
                name=name,
                reason=_none(reason),
                exit_code=exit_code if terminal else None,
                signal=signal if terminal else None,
                nodes=expand_hostlist(_none(nodelist)),
                partition=_none(partition),
                submit=_when(submit),
                start=_when(start),
                end=_when(end) if terminal else None,
                node_count=_count(nodes),
                cpus=_count(cpus),
                user=_none(user),
                account=_none(account),
                comment=_none(comment),
                time_limit_s=_limit(limit),
                source=source,
            )
        )
    return jobs


def parse_sinfo_nodes(stdout: str) -> list[NodeInfo]:
    """The nodes of :func:`sinfo_nodes_argv`'s output; a node in two partitions is one node."""
    nodes: dict[str, NodeInfo] = {}
    parts: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        values = _fields(line, len(_NODE_FIELDS))
        if values is None:
            continue
        (name, state, partition, cpus, sockets, cores, threads, memory, cpu_state,
         alloc_mem, gres, gres_used, reason) = values  # fmt: skip
        partition = partition.rstrip("*")  # "cpu*": the default partition
        parts.setdefault(name, [])
        if partition and partition not in parts[name]:
            parts[name].append(partition)
        if name in nodes:
            continue
        allocated = cpu_state.split("/")[0]
        nodes[name] = NodeInfo(
            name=name,
            status=parse_node_state(state),
            cpus=_count(cpus) or 0,
            sockets=_count(sockets) or 1,
            cores_per_socket=_count(cores) or 1,
            threads_per_core=_count(threads) or 1,
            memory=(_count(memory) or 0) * _MIB,
            alloc_cpus=_count(allocated) or 0,
            alloc_memory=(_count(alloc_mem) or 0) * _MIB,
            gres=gres if _none(gres) else "",
            gres_used=gres_used if _none(gres_used) else "",
            reason=_none(reason),
        )
    return [replace(node, partitions=tuple(parts[node.name])) for node in nodes.values()]

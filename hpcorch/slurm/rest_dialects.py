"""What each slurmrestd ``data_parser`` version expects and answers: one table, one row each.

Slurm serves a few OpenAPI versions at a time (22.05: v0.0.38; 24.11:
v0.0.40 to v0.0.42; 26.05: v0.0.43 to v0.0.45) and drops old ones, so the client
reads which the server serves and speaks the newest both sides know
(:func:`choose`). Versions fall in two families:

- **v0.0.38** (22.05): the job description takes the environment as an
  object, plain integers, ``nodelist``/``exclude_nodes`` strings, and the
  script beside the job; ``"requeue": false`` is ignored (the client works
  around it); no accounting endpoints without slurmdbd.
- **v0.0.39 and later** (23.02+): the environment is a ``KEY=VALUE`` list,
  numbers that may be unset are ``{"set": true, "number": N}``, node lists are
  lists, the script goes inside the job, ``--exclusive`` is
  ``"shared": ["none"]`` (``exclusive`` was dropped in v0.0.42), a signal is
  split into ``kill_warning_*`` fields, and ``/slurmdb/<v>/jobs?step=IDS``
  answers for jobs slurmctld has forgotten (when slurmdbd is configured; one
  ``step=`` per id: 24.11 refuses ``step=1,2``). Partitions lose their flags,
  so which one is the default is unknown until v0.0.45 (26.05) restores them.

Responses (``/jobs``, ``/nodes``, ``/partitions``, ``/slurmdb/.../jobs``) are the
same documents ``squeue/sinfo/sacct --json`` print for that release; the
parsers in :mod:`hpcorch.slurm.parse` read every family's shapes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hpcorch.childenv import child_env
from hpcorch.errors import SubmissionRefused
from hpcorch.slurm.hostlists import compress_hostlist
from hpcorch.slurm.rest_versions import Dialect

if TYPE_CHECKING:
    from hpcorch.slurm.script import JobRequest

__all__ = [
    "PLAIN_FIELDS",
    "begin_time",
    "job_description",
    "job_environment",
    "parse_signal",
]

_MIB = 1024**2
_BEGIN = re.compile(r"now\+(\d+)(seconds|minutes|hours|days)?", re.IGNORECASE)
_UNIT_S = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
_SIGNAL = re.compile(r"(?:(?P<where>[BR]):)?(?P<sig>[A-Za-z0-9]+)(?:@(?P<delay>\d+))?")


# ---------------------------------------------------------------- job descriptions


def job_environment(req: JobRequest, env: Mapping[str, str]) -> dict[str, str]:
    """sbatch exports the caller's environment; so do we, minus anything secret."""
    out = child_env(env)
    out.update(req.env)
    return out


def begin_time(text: str, now: float) -> int:
    match = _BEGIN.fullmatch(text.strip())
    if match:
        return int(now) + int(match.group(1)) * _UNIT_S[(match.group(2) or "seconds").lower()]
    if text.strip().isdigit():
        return int(text)
    raise SubmissionRefused(
        f"begin={text!r}: the REST backend understands 'now+N[seconds|minutes|hours|days]' "
        "or Unix seconds; use the cli backend for other forms"
    )


# JobRequest fields passed through as they are: (slurmrestd's key, pyslurm's key).
PLAIN_FIELDS: dict[str, tuple[str, str]] = {
    "partition": ("partition", "partitions"),
    "account": ("account", "account"),
    "qos": ("qos", "qos"),
    "ntasks": ("tasks", "ntasks"),
    "ntasks_per_node": ("tasks_per_node", "ntasks_per_node"),
    "cpus_per_task": ("cpus_per_task", "cpus_per_task"),
    "output": ("standard_output", "standard_output"),
    "error": ("standard_error", "standard_error"),
    "constraint": ("constraints", "constraints"),
    "requeue": ("requeue", "is_requeueable"),
    "comment": ("comment", "comment"),
    "array": ("array", "array"),
}


def _number(value: int) -> dict[str, Any]:
    return {"set": True, "infinite": False, "number": value}


def job_description(
    req: JobRequest,
    dialect: Dialect,
    env: Mapping[str, str],
    cwd: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The ``job`` object for a request in ``dialect`` (pure; ``now`` only for ``begin``)."""
    if req.extra:
        raise SubmissionRefused(
            f"the REST backend cannot pass sbatch options {list(req.extra)}; use the cli backend"
        )
    structured = dialect.structured
    environment = job_environment(req, env)
    desc: dict[str, Any] = {
        "name": req.name,
        "environment": [f"{k}={v}" for k, v in environment.items()] if structured else environment,
        "current_working_directory": req.chdir or cwd,
    }

    def put(key: str, value: Any, wrap: bool = False) -> None:
        if value is None or value == ():
            return
        desc[key] = _number(value) if wrap and structured else value

    for attr, (key, _) in PLAIN_FIELDS.items():
        put(key, getattr(req, attr))
    if req.nodes:
        if structured:
            desc["minimum_nodes"] = desc["maximum_nodes"] = req.nodes
        else:
            desc["nodes"] = [req.nodes, req.nodes]
    put("memory_per_node", math.ceil(req.mem / _MIB) if req.mem is not None else None, True)
    put("memory_per_cpu", math.ceil(req.mem_per_cpu / _MIB) if req.mem_per_cpu else None, True)
    if req.gres:
        # v0.0.39+ take GRES as TRES ("gres/gpu:sim:2"), as sbatch sends it.
        desc["tres_per_node" if structured else "gres"] = (
            f"gres/{req.gres}" if structured and not req.gres.startswith("gres") else req.gres
        )
    put("time_limit", math.ceil(req.time_s / 60) if req.time_s else None, True)
    if structured:
        put("required_nodes", list(req.nodelist) or None)
        put("excluded_nodes", list(req.exclude) or None)
    else:
        # Undocumented in the v0.0.38 spec but accepted by its parser (checked on 22.05.8).
        put("nodelist", compress_hostlist(req.nodelist) or None)
        put("exclude_nodes", compress_hostlist(req.exclude) or None)
    if req.exclusive:
        if not structured:
            desc["exclusive"] = "true"
        elif dialect.exclusive_field:
            desc["exclusive"] = ["true"]
        else:
            desc["shared"] = ["none"]  # what sbatch --exclusive sets
    if req.signal:
        _put_signal(desc, req.signal, structured)
    if req.hold:
        desc["hold"] = True
    if req.begin:
        put("begin_time", begin_time(req.begin, time.time() if now is None else now), True)
    return desc


def parse_signal(text: str) -> tuple[str | None, str, int]:
    """sbatch's ``--signal=[B:|R:]SIG[@SECONDS]`` → (``B``/``R``/None, SIG, seconds)."""
    match = _SIGNAL.fullmatch(text.strip())
    if not match:
        raise SubmissionRefused(
            f"signal={text!r}: expected [B:|R:]SIGNAL[@SECONDS], e.g. 'B:USR1@60'"
        )
    return match.group("where"), match.group("sig"), int(match.group("delay") or 60)


def _put_signal(desc: dict[str, Any], text: str, structured: bool) -> None:
    if not structured:
        desc["signal"] = text
        return
    where, sig, delay = parse_signal(text)
    desc["kill_warning_signal"] = sig
    desc["kill_warning_delay"] = _number(delay)
    if where:
        desc["kill_warning_flags"] = ["BATCH_JOB" if where == "B" else "RESERVATION_JOB"]

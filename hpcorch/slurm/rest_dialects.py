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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpcorch.errors import SubmissionRefused
from hpcorch.slurm.hostlists import compress_hostlist

if TYPE_CHECKING:
    from hpcorch.slurm.script import JobRequest

__all__ = [
    "AUTO",
    "DIALECTS",
    "PLAIN_FIELDS",
    "Dialect",
    "begin_time",
    "choose",
    "job_description",
    "job_environment",
    "newest_first",
    "parse_signal",
    "served_versions",
    "valid_api_version",
    "version_order",
]

AUTO = "auto"
_MIB = 1024**2
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|JWT|API_KEY|CREDENTIAL", re.IGNORECASE)
_BEGIN = re.compile(r"now\+(\d+)(seconds|minutes|hours|days)?", re.IGNORECASE)
_UNIT_S = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
_SIGNAL = re.compile(r"(?:(?P<where>[BR]):)?(?P<sig>[A-Za-z0-9]+)(?:@(?P<delay>\d+))?")
_PATH_VERSION = re.compile(r"^/slurm(db)?/(v\d+\.\d+\.\d+)/")


@dataclass(frozen=True, slots=True)
class Dialect:
    """One ``data_parser`` version: how to ask, and what the server can do."""

    version: str
    since: str  # the first Slurm release that serves it
    structured: bool  # v0.0.39+: env list, {"set", "number"} numbers, node lists, script in job
    exclusive_field: bool  # v0.0.39 to v0.0.41 still take "exclusive": ["true"]
    honours_no_requeue: bool  # v0.0.38 drops "requeue": false
    partition_flags: bool  # v0.0.39 to v0.0.44 do not say which partition is the default

    @property
    def base(self) -> str:
        return f"/slurm/{self.version}"

    @property
    def accounting_base(self) -> str:
        return f"/slurmdb/{self.version}"

    def submit_body(self, desc: dict[str, Any], script: str) -> dict[str, Any]:
        if self.structured:
            return {"job": {**desc, "script": script}}
        return {"script": script, "job": desc}


def _v(n: int, since: str, *, structured: bool = True, exclusive: bool = False) -> Dialect:
    return Dialect(
        f"v0.0.{n}",
        since,
        structured,
        exclusive,
        honours_no_requeue=structured,
        partition_flags=not structured or n >= 45,
    )


# The one table: every version hpcorch speaks, oldest first.
DIALECTS: dict[str, Dialect] = {
    d.version: d
    for d in (
        _v(38, "22.05", structured=False),
        _v(39, "23.02", exclusive=True),
        _v(40, "23.11", exclusive=True),
        _v(41, "24.05", exclusive=True),
        _v(42, "24.11"),
        _v(43, "25.05"),
        _v(44, "25.11"),
        _v(45, "26.05"),
    )
}


def version_order(version: str) -> tuple[int, ...]:
    """Sort key: ``v0.0.9`` before ``v0.0.10``."""
    return tuple(int(p) for p in re.findall(r"\d+", version))


def valid_api_version(value: str) -> str:
    """``value`` if it is ``auto`` or a version in the table; else ValueError listing them."""
    if value == AUTO or value in DIALECTS:
        return value
    raise ValueError(
        f"api_version {value!r} is not one hpcorch speaks; use one of: "
        f"{', '.join([AUTO, *DIALECTS])}"
    )


def served_versions(openapi: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(slurmctld versions, slurmdbd versions) named by the paths of ``GET /openapi/v3``."""
    ctld: set[str] = set()
    dbd: set[str] = set()
    for path in openapi.get("paths") or {}:
        match = _PATH_VERSION.match(str(path))
        if match:
            (dbd if match.group(1) else ctld).add(match.group(2))
    return ctld, dbd


def choose(served: Iterable[str]) -> Dialect | None:
    """The newest version both the server and hpcorch speak (None: no common one)."""
    common = [v for v in served if v in DIALECTS]
    return DIALECTS[max(common, key=version_order)] if common else None


def newest_first() -> list[Dialect]:
    return sorted(DIALECTS.values(), key=lambda d: version_order(d.version), reverse=True)


# ---------------------------------------------------------------- job descriptions


def job_environment(req: JobRequest, env: Mapping[str, str]) -> dict[str, str]:
    """sbatch exports the caller's environment; so do we, minus anything secret."""
    out = {k: v for k, v in env.items() if not _SECRET_NAME.search(k)}
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

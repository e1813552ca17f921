"""Build sbatch scripts: a frozen :class:`JobRequest` in, script text out (pure).

The script is what ``sbatch`` reads on stdin and what slurmrestd receives as
``script``; both backends submit the same text, so what runs does not depend
on the backend. Expected scripts are stored under ``tests/unit/expected/``.
"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from hpcorch.sites.model import Prologue
from hpcorch.slurm.hostlists import compress_hostlist, expand_hostlist
from hpcorch.units import format_duration, format_memory, parse_duration, parse_memory

__all__ = [
    "MODULE_INIT",
    "JobRequest",
    "check_plain_path",
    "prologue_lines",
    "render_sbatch",
    "request_from_script",
    "sbatch_directives",
]

# What a value may hold to appear unquoted in a job script: dask-jobqueue writes its
# paths (``#SBATCH -e DIR/...``, ``--tls-* DIR/...``) as they are. '%' is left out:
# Slurm expands it in output paths (%j).
_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def check_plain_path(path: str, what: str) -> str:
    """``path`` if it can stand unquoted in a job script, else ValueError saying why."""
    if not _PLAIN.fullmatch(path) or path.startswith("-"):
        raise ValueError(
            f"{what} {path!r:.80} cannot go into a Slurm job script: use a path of letters, "
            "digits and _ @ + = : , . / - (no spaces, quotes, $, `, % or newlines)"
        )
    return path


# Defines ``module`` where the shell has not got it yet (a non-interactive bash that
# did not read /etc/profile): Lmod's, else Environment Modules' init script.
MODULE_INIT = (
    "type module >/dev/null 2>&1 || for f in /etc/profile.d/lmod.sh "
    '/etc/profile.d/modules.sh; do [ -r "$f" ] && . "$f" && break; done'
)


def prologue_lines(prologue: Prologue) -> list[str]:
    """The site prologue as script lines: its modules and environment quoted, its
    commands as the site wrote them (they are shell by design). Every job script
    hpcorch renders (sbatch scripts, dask-jobqueue workers, a command task's setup)
    uses this one rendering."""
    lines = [MODULE_INIT] if prologue.modules or prologue.module_purge else []
    if prologue.module_purge:
        lines.append("module purge")
    lines += [f"module load {shlex.quote(m)}" for m in prologue.modules]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in prologue.env.items()]
    lines += list(prologue.commands)
    return lines


def _directive_value(flag: str, value: str) -> str:
    """``--flag=value`` as sbatch reads it: values with spaces in double quotes (sbatch
    strips them; it keeps single quotes), and none that a directive cannot hold."""
    if any(c in value for c in '"\n\r\0'):
        raise ValueError(
            f"--{flag} {value!r:.60}: #SBATCH values must be single lines without double quotes"
        )
    return f'--{flag}="{value}"' if any(c.isspace() for c in value) else f"--{flag}={value}"


def _memory(value: Any) -> Any:
    return parse_memory(value) if isinstance(value, str) else value


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _node_names(value: Any) -> Any:
    """Node names, each entry possibly a hostlist (``"gpu[1-2]"``), expanded and checked."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, list | tuple):
        return value
    names = tuple(name for entry in value for name in expand_hostlist(str(entry)))
    bad = [name for name in names if not _NODE_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"not Slurm node names: {bad}")
    return names


class JobRequest(BaseModel):
    """One batch job, as hpcorch asks Slurm for it. Memory in bytes, time in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("hpcorch", min_length=1)
    command: str | tuple[str, ...] = Field(..., description="script body, or an argv to exec")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int | None = Field(None, ge=1)
    ntasks: int | None = Field(None, ge=1)
    ntasks_per_node: int | None = Field(None, ge=1)
    cpus_per_task: int | None = Field(None, ge=1)
    mem: Annotated[int | None, BeforeValidator(_memory)] = Field(None, ge=0, description="per node")
    mem_per_cpu: Annotated[int | None, BeforeValidator(_memory)] = Field(None, ge=1)
    gres: str | None = Field(None, description="e.g. 'gpu:sim:2'")
    time_s: Annotated[float | None, BeforeValidator(_duration)] = Field(None, gt=0)
    output: str | None = Field(None, description="stdout path; Slurm's %j etc. allowed")
    error: str | None = None
    chdir: str | None = None
    nodelist: Annotated[tuple[str, ...], BeforeValidator(_node_names)] = ()
    exclude: Annotated[tuple[str, ...], BeforeValidator(_node_names)] = ()
    constraint: str | None = None
    exclusive: bool = False
    requeue: bool | None = Field(None, description="None: the cluster's default")
    signal: str | None = Field(None, description="e.g. 'B:USR1@60'")
    comment: str | None = None
    hold: bool = False
    begin: str | None = Field(None, description="e.g. 'now+1hour'")
    array: str | None = None
    env: dict[str, str] = Field(default_factory=dict, description="exported before the command")
    extra: tuple[str, ...] = Field((), description="more sbatch options, e.g. '--mail-type=END'")

    @model_validator(mode="after")
    def _check(self) -> JobRequest:
        if self.mem is not None and self.mem_per_cpu is not None:
            raise ValueError("give mem or mem_per_cpu, not both (sbatch refuses both)")
        for text in self.extra:
            if any(c in text for c in "\n\r\0"):
                raise ValueError("sbatch options must be single lines")
        for key in self.env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"environment variable name {key!r:.60} is not valid")
        sbatch_directives(self)  # every value can be written as a directive
        return self


def sbatch_directives(req: JobRequest) -> list[str]:
    """The ``--option=value`` list, in a fixed order."""
    opts: list[str] = [_directive_value("job-name", req.name)]

    def add(flag: str, value: object | None) -> None:
        if value is not None:
            opts.append(_directive_value(flag, str(value)))

    add("partition", req.partition)
    add("account", req.account)
    add("qos", req.qos)
    add("nodes", req.nodes)
    add("ntasks", req.ntasks)
    add("ntasks-per-node", req.ntasks_per_node)
    add("cpus-per-task", req.cpus_per_task)
    if req.mem is not None:
        # --mem=0 means "all of the node's memory" to Slurm; keep it literal.
        opts.append("--mem=0" if req.mem == 0 else f"--mem={format_memory(req.mem)}")
    add("mem-per-cpu", format_memory(req.mem_per_cpu) if req.mem_per_cpu else None)
    add("gres", req.gres)
    add("time", format_duration(req.time_s) if req.time_s is not None else None)
    add("output", req.output)
    add("error", req.error)
    add("chdir", req.chdir)
    add("nodelist", compress_hostlist(req.nodelist) or None)
    add("exclude", compress_hostlist(req.exclude) or None)
    add("constraint", req.constraint)
    if req.exclusive:
        opts.append("--exclusive")
    if req.requeue is not None:
        opts.append("--requeue" if req.requeue else "--no-requeue")
    add("signal", req.signal)
    if req.comment:
        add("comment", req.comment)
    if req.hold:
        opts.append("--hold")
    add("begin", req.begin)
    add("array", req.array)
    opts.extend(req.extra)
    return opts


def render_sbatch(req: JobRequest, prologue: Prologue | None = None) -> str:
    """The full batch script: shebang, ``#SBATCH`` lines, the site prologue, the command."""
    extra = prologue.directives if prologue else ()
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {opt}" for opt in [*sbatch_directives(req), *extra]]
    lines.append("")
    if prologue:
        lines += prologue_lines(prologue)
    lines += [f"export {k}={shlex.quote(v)}" for k, v in req.env.items()]
    if isinstance(req.command, str):
        lines.append(req.command.rstrip("\n"))
    else:
        lines.append(f"exec {shlex.join(req.command)}")
    return "\n".join(lines) + "\n"


def _directive_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="#SBATCH", add_help=False, exit_on_error=False)
    add = p.add_argument
    add("-J", "--job-name", dest="name")
    add("-p", "--partition")
    add("-A", "--account")
    add("-q", "--qos")
    add("-N", "--nodes", type=int)
    add("-n", "--ntasks", type=int)
    add("--ntasks-per-node", type=int)
    add("-c", "--cpus-per-task", type=int)
    add("--mem")
    add("--mem-per-cpu")
    add("--gres")
    add("-t", "--time")
    add("-o", "--output")
    add("-e", "--error")
    add("-D", "--chdir")
    add("-w", "--nodelist")
    add("-x", "--exclude")
    add("-C", "--constraint")
    add("--exclusive", action="store_true")
    add("--requeue", dest="requeue", action="store_const", const=True)
    add("--no-requeue", dest="requeue", action="store_const", const=False)
    add("--signal")
    add("--comment")
    add("-H", "--hold", action="store_true")
    add("-b", "--begin")
    add("-a", "--array")
    return p


def request_from_script(text: str) -> JobRequest:
    """Read a script's ``#SBATCH`` lines back into a JobRequest (for slurmrestd,
    which ignores them). Options it does not know raise ValueError naming them."""
    argv: list[str] = []
    for line in text.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#SBATCH"):
            argv += shlex.split(stripped[len("#SBATCH") :])
        elif stripped and not stripped.startswith("#"):
            break  # sbatch stops reading directives at the first command
    try:
        ns, unknown = _directive_parser().parse_known_args(argv)
    except argparse.ArgumentError as exc:
        raise ValueError(f"bad #SBATCH directive: {exc}") from exc
    if unknown:
        raise ValueError(f"#SBATCH options the REST backend cannot pass: {' '.join(unknown)}")
    fields = {k: v for k, v in vars(ns).items() if v not in (None, False)}
    if "time" in fields:
        fields["time_s"] = _slurm_minutes(fields.pop("time"))
    if "requeue" in vars(ns) and ns.requeue is False:
        fields["requeue"] = False
    return JobRequest(command=text, **fields)


def _slurm_minutes(text: str) -> float:
    """sbatch's --time: a bare number is minutes (``--time=1``), else [D-]HH:MM:SS forms."""
    if text.isdigit():
        return int(text) * 60.0
    if re.fullmatch(r"\d+:\d+", text):  # MM:SS for sbatch
        minutes, seconds = text.split(":")
        return int(minutes) * 60.0 + int(seconds)
    return parse_duration(text)

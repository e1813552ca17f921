"""Build sbatch scripts: a frozen :class:`JobRequest` in, script text out (pure).

The script is what ``sbatch`` reads on stdin and what slurmrestd receives as
``script``; both backends submit the same text, so what runs does not depend
on the backend. Expected scripts are stored under ``tests/unit/expected/``.
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from hpcorch.sites.model import Prologue
from hpcorch.units import format_duration, format_memory, parse_duration, parse_memory

__all__ = ["JobRequest", "render_sbatch", "sbatch_directives"]


def _memory(value: Any) -> Any:
    return parse_memory(value) if isinstance(value, str) else value


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


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
    nodelist: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
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
        for text in (self.name, self.comment or "", *self.extra):
            if "\n" in text:
                raise ValueError("sbatch options must be single lines")
        if self.comment and '"' in self.comment:
            raise ValueError("comment must not contain double quotes")
        return self


def sbatch_directives(req: JobRequest) -> list[str]:
    """The ``--option=value`` list, in a fixed order."""
    opts: list[str] = [f"--job-name={req.name}"]

    def add(flag: str, value: object | None) -> None:
        if value is not None:
            opts.append(f"--{flag}={value}")

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
    add("nodelist", ",".join(req.nodelist) or None)
    add("exclude", ",".join(req.exclude) or None)
    add("constraint", req.constraint)
    if req.exclusive:
        opts.append("--exclusive")
    if req.requeue is not None:
        opts.append("--requeue" if req.requeue else "--no-requeue")
    add("signal", req.signal)
    if req.comment:
        # sbatch strips double quotes from directive values; single quotes it keeps.
        add("comment", f'"{req.comment}"' if any(c.isspace() for c in req.comment) else req.comment)
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
        lines += [f"module load {shlex.quote(m)}" for m in prologue.modules]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in prologue.env.items()]
        lines += list(prologue.commands)
    lines += [f"export {k}={shlex.quote(v)}" for k, v in req.env.items()]
    if isinstance(req.command, str):
        lines.append(req.command.rstrip("\n"))
    else:
        lines.append(f"exec {shlex.join(req.command)}")
    return "\n".join(lines) + "\n"

"""What a run would submit, without submitting anything: ``hpcorch plan``.

:func:`plan_run` (no Slurm call, no scheduler) gives every job the run could start
(its worker pools, the ``hpcorch submit`` driver) as the job script Slurm would
receive, every MPI step as the ``srun`` line its worker would run, and the
decisions behind each: partition or constraint, QOS, account, GPU request,
walltime and the limit it was checked against. The same site rules as a real run
apply (:mod:`hpcorch.sites.rules`): a job the site would refuse is a
:class:`~hpcorch.errors.SiteRuleError` here too. Placeholders stand where only
the run knows the value: ``SCHEDULER`` (the scheduler's address), ``WORKER``
(a worker's name), ``$SLURM_JOB_ID`` and the run directory given.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcorch.errors import ResourceError
from hpcorch.mpi import build_srun_step_argv
from hpcorch.options import RunOptions
from hpcorch.placement.fit import partition_for
from hpcorch.placement.placing import placing_for
from hpcorch.provision.slurm_pool import PoolPlan, job_options, plan_pools
from hpcorch.sites.model import Partition, Site
from hpcorch.sites.rules import gpu_directives, site_with
from hpcorch.slurm.script import render_sbatch
from hpcorch.spec import TaskSpec, WorkflowSpec
from hpcorch.submit import driver_plan, driver_request
from hpcorch.units import format_duration, format_memory

__all__ = ["JobPlan", "RunPlan", "StepPlan", "format_plan", "plan_run"]

SCHEDULER = "tls://SCHEDULER:8786"


@dataclass(frozen=True, slots=True)
class JobPlan:
    """One batch job the run could submit, and why it looks the way it does."""

    kind: str  # "pool" or "driver"
    name: str
    decisions: dict[str, Any]
    script: str
    tasks: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "tasks": list(self.tasks),
            "decisions": self.decisions,
            "script": self.script,
        }


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One MPI task's step inside a pool's job."""

    task: str
    pool: str
    argv: tuple[str, ...]

    @property
    def line(self) -> str:
        return shlex.join(self.argv).replace("'--jobid=$SLURM_JOB_ID'", "--jobid=$SLURM_JOB_ID")

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "pool": self.pool, "argv": list(self.argv), "line": self.line}


@dataclass(frozen=True, slots=True)
class RunPlan:
    site: str
    workflow: str
    jobs: tuple[JobPlan, ...]
    steps: tuple[StepPlan, ...] = ()
    unplaced: tuple[str, ...] = field(default=())
    """Tasks no partition of the site runs (they would go to another region)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "workflow": self.workflow,
            "jobs": [j.as_dict() for j in self.jobs],
            "steps": [s.as_dict() for s in self.steps],
            "unplaced": list(self.unplaced),
        }


def _gpu_decision(partition: Partition, nodes: int) -> str:
    asked = gpu_directives(partition, nodes=nodes)
    if not asked:
        return "none (no GPUs)" if not partition.node.gpus else "none"
    return f"{' '.join(asked)} (gpu_request: {partition.gpu_method})"


def _selection(partition: Partition) -> str:
    if partition.select_by_name:
        return f"--partition={partition.name}"
    return f"--constraint={partition.constraint} (partition {partition.name} is a node class)"


def _pool_job(plan: PoolPlan, site: Site, run_dir: Path, python: str, tasks: list[str]) -> JobPlan:
    from dask_jobqueue.slurm import SLURMJob  # noqa: PLC0415  # heavy (distributed, dask): only when planning pools

    options = {**job_options(plan, site, run_dir), "python": python}
    job = SLURMJob(scheduler=SCHEDULER, name="WORKER", **options)  # type: ignore[no-untyped-call]
    settings = plan.settings
    assert settings is not None  # plan_pools resolves them
    limit = plan.limit
    decisions = {
        "select": _selection(plan.partition),
        "constraint": settings.constraint,
        "qos": settings.qos,
        "account": settings.account,
        "reservation": settings.reservation,
        "exclusive": settings.exclusive,
        "gpus": _gpu_decision(plan.partition, plan.nodes),
        "nodes_per_job": plan.nodes,
        "max_jobs": plan.jobs,
        "walltime": format_duration(plan.walltime_s),
        "walltime_limit": format_duration(limit.seconds)
        if limit is not None and limit.seconds is not None
        else None,
        "limit_rule": limit.rule if limit is not None else None,
        "knobs": dict(plan.knobs),
    }
    script: str = job.job_script()  # type: ignore[no-untyped-call]
    return JobPlan("pool", plan.name, decisions, script, tuple(tasks))


def _steps(
    spec: WorkflowSpec, site: Site, plans: Sequence[PoolPlan], run_dir: Path, python: str
) -> list[StepPlan]:
    out = []
    for task in spec.tasks:
        if task.mpi is None:
            continue
        pool = _pool_of(task, site, plans)
        if pool is None:
            continue
        step = placing_for(task, site, run_dir).mpi
        if step is None:
            continue
        if task.command is not None:
            command = list(task.command)
        else:
            payload = Path(step.workdir) / "mpi-XXXXXXXX.pkl"  # a new file per attempt
            command = [python, "-m", "hpcorch.mpi_run", str(payload)]
        argv = build_srun_step_argv(
            step,
            command,
            job_id="$SLURM_JOB_ID",
            launcher=step.launcher,
            nodes=step.nodes,
            memory=step.memory,
            job_name=f"hpcorch-{task.id}",
            python=python,
        )
        out.append(StepPlan(task.id, pool, tuple(argv)))
    return out


def _pool_of(task: TaskSpec, site: Site, plans: Sequence[PoolPlan]) -> str | None:
    try:
        part = partition_for(task, site)
    except ResourceError:
        return None
    knobs = tuple(sorted(task.slurm_knobs.items()))
    for plan in plans:
        if plan.partition.name == part.name and plan.nodes == task.nodes and plan.knobs == knobs:
            return plan.name
    return None


def plan_run(
    spec: WorkflowSpec,
    site: Site,
    *,
    options: RunOptions | None = None,
    workflow: Path | None = None,
    run_dir: Path = Path("RUN_DIR"),
    python: str = sys.executable,
    driver: bool = True,
    walltime_s: float | None = None,
    mail_type: str | None = None,
    mail_user: str | None = None,
) -> RunPlan:
    """Every job and MPI step a run of ``spec`` on ``site`` would start (pure: no Slurm).

    ``driver``: also the job ``hpcorch submit`` would submit (Slurm sites only), with
    its ``walltime_s`` and mail options."""
    options = options or RunOptions()
    site = site_with(site, account=options.account, qos=options.qos)
    if site.kind != "slurm":
        return RunPlan(site.name, spec.name, (), (), ())
    plans = plan_pools(spec, site)
    members: dict[str, list[str]] = {p.name: [] for p in plans}
    unplaced = []
    for task in spec.tasks:
        pool = _pool_of(task, site, plans)
        if pool is None:
            unplaced.append(task.id)
        else:
            members[pool].append(task.id)
    jobs = [_pool_job(p, site, run_dir, python, members[p.name]) for p in plans]
    if driver:
        chosen = driver_plan(site, walltime_s=walltime_s, qos=options.qos)
        request = driver_request(
            workflow or Path(f"{spec.name}.yaml"),
            site,
            run_dir,
            "RUN_ID",
            walltime_s=chosen.walltime_s,
            hpcorch=(python, "-m", "hpcorch"),
            options=options,
            mail_type=mail_type,
            mail_user=mail_user,
        )
        part = site.partition(chosen.settings.partition)
        decisions = {
            "select": _selection(part),
            "constraint": chosen.settings.constraint,
            "qos": chosen.settings.qos,
            "account": chosen.settings.account,
            "reservation": chosen.settings.reservation,
            "gpus": "none (the driver runs no task)",
            "cpus": site.submit.cpus,
            "memory": format_memory(site.submit.memory),
            "walltime": format_duration(chosen.walltime_s),
            "walltime_limit": format_duration(chosen.limit.seconds)
            if chosen.limit.seconds is not None
            else None,
            "limit_rule": chosen.limit.rule,
        }
        jobs.append(JobPlan("driver", "driver", decisions, render_sbatch(request, site.prologue)))
    steps = _steps(spec, site, plans, run_dir, python)
    return RunPlan(site.name, spec.name, tuple(jobs), tuple(steps), tuple(unplaced))


def format_plan(plan: RunPlan) -> str:
    """The plan as text: each job's decisions, then its script; then the MPI steps."""
    if not plan.jobs:
        return f"site {plan.site} is not a Slurm site: the run submits no job\n"
    lines = [f"# hpcorch plan: workflow {plan.workflow} on site {plan.site} (nothing submitted)"]
    for job in plan.jobs:
        title = f"pool {job.name}" if job.kind == "pool" else "driver (hpcorch submit)"
        lines += ["", f"== {title}" + (f": tasks {', '.join(job.tasks)}" if job.tasks else "")]
        for key, value in job.decisions.items():
            if value is None or value == {} or value is False:
                continue
            lines.append(f"   {key}: {value}")
        lines += ["", *("   " + line if line else "" for line in job.script.splitlines())]
    if plan.steps:
        lines += ["", "== MPI steps (run by a worker inside its pool's job)"]
        for step in plan.steps:
            lines.append(f"   {step.task} in pool {step.pool}: {step.line}")
    if plan.unplaced:
        lines += ["", f"== no partition of {plan.site} runs: {', '.join(plan.unplaced)}"]
    return "\n".join(lines) + "\n"

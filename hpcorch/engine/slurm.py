"""Slurm sites: one dask-jobqueue worker pool per resource class, behind one TLS scheduler.

:func:`plan_pools` (pure) groups the workflow's tasks by the smallest
partition each fits and sizes one pool per partition: whole-node jobs, as
many as the demand needs and the partition has. :class:`SlurmBackend` starts
a ``SLURMCluster`` for the first pool (it owns the scheduler, TLS with a
temporary certificate by default) and adds the other pools' jobs to the same
cluster's worker spec, so one run mixes CPU and GPU shapes on one scheduler
and results still flow worker to worker.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcorch.engine.site import partition_for
from hpcorch.errors import InfrastructureError
from hpcorch.sites.model import Partition, Site
from hpcorch.spec import WorkflowSpec
from hpcorch.units import format_duration

__all__ = ["PoolPlan", "SlurmBackend", "job_options", "plan_pools"]

logger = logging.getLogger(__name__)

DEFAULT_WALLTIME_S = 3600.0


@dataclass(frozen=True)
class PoolPlan:
    """One resource class: whole-node jobs on one partition."""

    name: str
    partition: Partition
    jobs: int
    walltime_s: float

    @property
    def cores(self) -> int:
        return self.partition.node.cores

    @property
    def memory(self) -> int:
        return self.partition.node.memory

    @property
    def gpus(self) -> int:
        return self.partition.node.gpus


def plan_pools(
    spec: WorkflowSpec, site: Site, default_walltime_s: float = DEFAULT_WALLTIME_S
) -> list[PoolPlan]:
    """Pools for ``spec`` on ``site``: one per partition some task needs, sized by core demand."""
    demand: dict[str, int] = {}
    longest: dict[str, float] = {}
    partitions: dict[str, Partition] = {}
    for task in spec.tasks:
        part = partition_for(task, site)
        partitions[part.name] = part
        demand[part.name] = demand.get(part.name, 0) + task.cpus * task.nodes
        longest[part.name] = max(longest.get(part.name, 0.0), task.resources.walltime or 0.0)
    plans = []
    for name, part in partitions.items():
        jobs = max(1, min(part.nodes, math.ceil(demand[name] / part.node.cores)))
        walltime = max(default_walltime_s, 2 * longest[name])
        limit = part.max_walltime_s or site.limits.max_walltime_s
        if limit is not None:
            walltime = min(walltime, limit)
        plans.append(PoolPlan(name=name, partition=part, jobs=jobs, walltime_s=walltime))
    # The default partition's pool first: it owns the scheduler.
    plans.sort(key=lambda p: (not p.partition.default, p.name))
    return plans


def job_options(plan: PoolPlan, site: Site, run_dir: Path) -> dict[str, Any]:
    """Keyword arguments of ``SLURMCluster``/``SLURMJob`` for one pool (pure)."""
    node = plan.partition.node
    resources = f"cpus={node.cores},memory={node.memory},gpus={node.gpus}"
    directives = list(site.prologue.directives)
    if plan.partition.gres and node.gpus:
        directives.append(f"--gres={plan.partition.gres}:{node.gpus}")
    if plan.partition.constraint:
        directives.append(f"--constraint={plan.partition.constraint}")
    prologue = [f"module load {m}" for m in site.prologue.modules]
    prologue += [f"export {k}={v}" for k, v in site.prologue.env.items()]
    prologue += list(site.prologue.commands)
    # slurmrestd's token breaks srun inside the job; workers never need it.
    prologue.append("unset SLURM_JWT")
    options: dict[str, Any] = {
        "queue": plan.partition.name,
        "cores": node.cores,
        "processes": 1,
        "memory": f"{node.memory // 1024**2}MiB",
        # Slurm's M is MiB; jobqueue would round the request up past the node's memory.
        "job_mem": f"{node.memory // 1024**2}M",
        "walltime": format_duration(plan.walltime_s),
        "job_extra_directives": directives,
        "job_script_prologue": prologue,
        "worker_extra_args": ["--resources", resources, *site.dask.worker_extra_args],
        "python": sys.executable,
        "log_directory": str(run_dir / "slurm"),
        "job_name": f"hpcorch-{plan.name}",
    }
    if site.account:
        options["account"] = site.account
    if site.dask.interface:
        options["interface"] = site.dask.interface
    if site.dask.local_directory:
        options["local_directory"] = site.dask.local_directory
    return options


class SlurmBackend:
    """A SLURMCluster with one group of whole-node jobs per pool, and a TLS client to it."""

    def __init__(
        self,
        site: Site,
        spec: WorkflowSpec,
        run_dir: Path,
        *,
        plans: Sequence[PoolPlan] | None = None,
        security: Any = None,
    ) -> None:
        import dask.config
        from dask_jobqueue.slurm import SLURMCluster, SLURMJob
        from distributed import Client
        from distributed.security import Security

        self.site = site
        self.plans = list(plans) if plans is not None else plan_pools(spec, site)
        self._started = time.time()
        tls_dir = run_dir / "tls"
        tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (run_dir / "slurm").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.security = security if security is not None else Security.temporary()  # type: ignore[no-untyped-call]
        first = self.plans[0]
        # The scheduler's HTTP port is not covered by TLS: serve nothing on it,
        # and only on localhost (a shared login node has other users).
        scheduler_options: dict[str, Any] = {"dashboard_address": "127.0.0.1:0", "dashboard": False}
        self._cluster: Any = None
        self._client: Any = None
        try:
            with dask.config.set({"distributed.scheduler.http.routes": []}):
                self._cluster = SLURMCluster(
                    security=self.security,
                    shared_temp_directory=str(tls_dir),
                    scheduler_options=scheduler_options,
                    **job_options(first, site, run_dir),
                )
            base = dict(self._cluster._job_kwargs)
            for plan in self.plans:
                options = {**base, **job_options(plan, site, run_dir)}
                for i in range(plan.jobs):
                    self._cluster.worker_spec[f"{plan.name}-{i}"] = {
                        "cls": SLURMJob,
                        "options": options,
                    }
            self._cluster.sync(self._cluster._correct_state)
            self._client = Client(  # type: ignore[no-untyped-call]
                self._cluster, security=self.security, set_as_default=False
            )
        except Exception as exc:
            self.close()
            raise InfrastructureError(
                f"cannot start Dask workers on site {site.name!r}: {exc}; "
                f"see the job logs in {run_dir / 'slurm'}"
            ) from exc
        logger.info(
            "site %s: scheduler %s, pools %s",
            site.name,
            self._cluster.scheduler_address,
            ", ".join(f"{p.name} x{p.jobs}" for p in self.plans),
        )

    @property
    def client(self) -> Any:
        return self._client

    def allocations(self) -> list[dict[str, Any]]:
        """One record per Slurm job of the pools, for the journal."""
        records = []
        for name, job in self._cluster.workers.items():
            pool = str(name).rsplit("-", 1)[0]
            records.append(
                {
                    "job_id": str(getattr(job, "job_id", None) or name),
                    "site": self.site.name,
                    "partition": pool,
                    "nodes": 1,
                    "state": "SUBMITTED",
                    "start": self._started,
                    "end": None,
                    "pool": pool,
                }
            )
        return records

    def close(self) -> None:
        try:
            if self._client is not None:
                self._client.close()
        finally:
            if self._cluster is not None:
                try:
                    self._cluster.close()
                except AssertionError:
                    # SpecCluster refuses to close jobs that never started; cancel them here.
                    logger.warning("some Slurm jobs of this run did not start; check squeue")
                self._cluster = None

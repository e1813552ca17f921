"""Where workers come from: a pool of Dask workers per resource class, behind one scheduler.

A :class:`WorkerSource` owns the scheduler and its pools and hands the engine a
Dask client. Every worker advertises its node's ``cpus``, ``memory`` (bytes)
and ``gpus`` as Dask worker resources, so per-task requests are enforced by
the scheduler. ``local`` is one LocalCluster worker holding the whole machine;
Slurm sites are in :mod:`hpcorch.provision.slurm_pool`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from hpcorch.childenv import site_secrets
from hpcorch.errors import InfrastructureError
from hpcorch.options import RunOptions
from hpcorch.placement.fit import distinct_shapes
from hpcorch.placement.placing import register_slots, span_resource
from hpcorch.placement.rebalance import Rebalancer
from hpcorch.provision import dashboard as dashboards
from hpcorch.provision.inside import AllocationWorkers, current_allocation
from hpcorch.provision.reaper import TaskReaper
from hpcorch.provision.scaler import AllocationWatch
from hpcorch.provision.security import temporary_security
from hpcorch.provision.slurm_pool import SlurmWorkers
from hpcorch.sites.model import Site
from hpcorch.spec import TaskSpec, WorkflowSpec

__all__ = ["LocalWorkers", "WorkerSource", "needs_resources", "open_workers", "task_resources"]

logger = logging.getLogger(__name__)


class WorkerSource(Protocol):
    """Where a run's workers come from: it owns the scheduler and its pools."""

    site: Site

    @property
    def sites(self) -> Mapping[str, Site]:
        """Every site whose workers may join the scheduler, by name (``site`` first)."""
        ...

    @property
    def client(self) -> Any:
        """The Dask ``distributed.Client`` to the scheduler (distributed is untyped)."""
        ...

    def allocations(self) -> list[dict[str, Any]]:
        """The run's live allocations, as journal rows."""
        ...

    def use_monitor(self, monitor: AllocationWatch) -> None:
        """Follow the run's allocations through its monitor (one poll for the run)."""
        ...

    def kick(self) -> None:
        """Scale now rather than at the next interval (tasks were just submitted)."""
        ...

    def close(self) -> None: ...


def needs_resources(spec: WorkflowSpec) -> bool:
    """Whether any task asks for more than one core of one worker thread.

    Workers run one thread per core, so when every task needs one core and
    nothing else, the thread slots already enforce the request and the
    scheduler's slower resource-restricted path can be skipped.
    """
    return any(
        t.cpus > 1 or t.resources.memory or t.gpus or t.nodes > 1
        for t in distinct_shapes(spec.tasks)
    )


def task_resources(task: TaskSpec) -> dict[str, float]:
    res: dict[str, float] = {"cpus": float(task.cpus)}
    if task.resources.memory:
        res["memory"] = float(task.resources.memory)
    if task.gpus:
        res["gpus"] = float(task.gpus)
    if task.nodes > 1:  # only workers of allocations that span its nodes
        res[span_resource(task.nodes)] = float(task.cpus)
    return res


class LocalWorkers:
    """One LocalCluster worker process with a thread per core of this machine.

    Other users of the machine reach loopback too: the scheduler and the worker
    take only clients with this run's certificates (:mod:`hpcorch.provision.security`).
    """

    def __init__(self, site: Site, dashboard: int | None = None) -> None:
        import dask.config  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts
        from distributed import Client, LocalCluster  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts

        self.site = site
        self.sites = {site.name: site}
        node = site.partitions[0].node
        resources = {"cpus": node.cores, "memory": node.memory, "gpus": node.gpus}
        self._cluster: Any
        self._client: Any
        self.security = temporary_security()
        port, scheduler_options, http_config = dashboards.http_settings(dashboard)
        try:
            with dask.config.set(http_config):
                self._cluster = LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=1,
                    threads_per_worker=node.cores,
                    processes=True,
                    resources=resources,
                    protocol="tls://",
                    security=self.security,
                    host="127.0.0.1",
                    # Its HTTP server serves no route but the dashboard when asked
                    # for; keep it off the network too (hpcorch.provision.dashboard).
                    dashboard_address=scheduler_options["dashboard_address"],
                    scheduler_kwargs={"dashboard": scheduler_options["dashboard"]},
                    # Task errors reach the journal and the summary; worker logs
                    # only add noise unless hpcorch itself is logging verbosely.
                    silence_logs=logging.WARNING
                    if logger.isEnabledFor(logging.INFO)
                    else logging.CRITICAL,
                )
            self._client = Client(  # type: ignore[no-untyped-call]
                self._cluster, security=self.security, set_as_default=False
            )
        except Exception as exc:
            raise InfrastructureError(f"cannot start a local Dask cluster: {exc}") from exc
        logger.info("local cluster at %s with %s", self._cluster.scheduler_address, resources)
        if port is not None:
            dashboards.announce(self._cluster.scheduler)

    @property
    def client(self) -> Any:
        return self._client

    def allocations(self) -> list[dict[str, Any]]:
        return []

    def use_monitor(self, monitor: AllocationWatch) -> None:
        """Nothing to follow: no allocation."""

    def kick(self) -> None:
        """Nothing to scale: one fixed worker."""

    def close(self) -> None:
        try:
            self._client.close()
        finally:
            self._cluster.close()


def open_workers(
    site: Site, spec: WorkflowSpec, run_dir: Path, options: RunOptions | None = None
) -> WorkerSource:
    """Start the scheduler and worker pools the workflow needs on ``site``; their
    workers hand out their nodes' cores and GPUs (:mod:`hpcorch.placement.placing`)."""
    workers = _open_workers(site, spec, run_dir, options or RunOptions())
    sites = list(workers.sites.values())
    try:
        register_slots(workers.client, sites)
        workers.client.register_plugin(Rebalancer())
        # every worker: no secret in its environment, no task process outliving it
        workers.client.register_plugin(TaskReaper(site_secrets(*sites)))
    except BaseException:
        workers.close()
        raise
    return workers


def _open_workers(
    site: Site, spec: WorkflowSpec, run_dir: Path, options: RunOptions | None = None
) -> WorkerSource:
    options = options or RunOptions()
    if site.kind == "local":
        return LocalWorkers(site, dashboard=options.dashboard)

    use = site.allocation.use_current and options.use_allocation
    allocation = current_allocation() if use else None
    if allocation is not None:  # inside a user's sbatch script: its nodes come first
        return AllocationWorkers(site, spec, run_dir, allocation, options=options)

    return SlurmWorkers(site, spec, run_dir, options=options)

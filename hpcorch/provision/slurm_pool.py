"""Slurm sites: dask-jobqueue worker pools per resource class, behind one TLS scheduler.

:func:`plan_pools` (pure) groups the workflow's tasks by the smallest
partition each fits: one pool of whole-node jobs per partition (per site, when
the run spans several), with the most jobs its demand could use.
:class:`SlurmWorkers` starts one ``SLURMCluster`` (it owns the scheduler, TLS
with a temporary certificate by default) with NO job: the
:class:`~hpcorch.provision.scaler.Scaler` brings allocations up with demand and
back down to zero when idle, adding and removing entries of the cluster's
worker spec, each job with the walltime the policy chose. One run mixes CPU
and GPU shapes, and sites, on one scheduler; results flow worker to worker.

Several sites ("regions"): the run options' ``regions`` (site names or files)
add sites whose pools the :class:`~hpcorch.provision.regions.Router` may choose;
their ``budget`` (e.g. ``"20 SU"``) caps what the run may spend. Each site's
jobs are submitted with that site's ``SLURM_CONF``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hpcorch.childenv import secret_names, site_secrets
from hpcorch.containers import container_argv
from hpcorch.errors import InfrastructureError, ResourceError
from hpcorch.journal import Journal, state_of_tasks
from hpcorch.options import RunOptions
from hpcorch.placement.fit import partition_for, shape_counts
from hpcorch.placement.placing import knobs_resource, span_resource
from hpcorch.policies.scale import ScaleConfig, Submit, about_ready
from hpcorch.policies.state import Budget, PoolShape, Resources, charge_rates, site_limits
from hpcorch.policies.walltime import walltime_for_tasks
from hpcorch.provision import dashboard
from hpcorch.provision.accounting import AllocationLife, journal_attempts
from hpcorch.provision.horizon import resources_arg, set_worker_resources, task_estimate
from hpcorch.provision.regions import Router
from hpcorch.provision.scaler import (
    AllocationWatch,
    Load,
    MonitorStates,
    PollerStates,
    Routing,
    Scaler,
)
from hpcorch.provision.security import NO_HTTP_ENV, private_dir, temporary_security
from hpcorch.sites.model import Partition, Prologue, Site
from hpcorch.sites.resolve import resolve_regions
from hpcorch.sites.rules import (
    JobSettings,
    WalltimeLimit,
    check_job,
    gpu_directives,
    job_settings,
    settings_directives,
)
from hpcorch.slurm.connect import connect, slurm_conf_path
from hpcorch.slurm.script import prologue_lines
from hpcorch.spec import TaskSpec, WorkflowSpec, resource_twin
from hpcorch.units import format_duration

__all__ = ["PoolPlan", "SlurmWorkers", "job_options", "plan_pools"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolPlan:
    """One resource class: whole-node jobs on one partition of one site."""

    name: str
    partition: Partition
    jobs: int
    """The most jobs its demand could use at once (the scaler starts from none)."""
    walltime_s: float
    """A walltime for all its tasks on ``jobs`` nodes; each submission chooses its own."""
    site: str = ""
    nodes: int = 1
    """Nodes per job: more than one for MPI tasks spanning nodes (srun steps in the job)."""
    settings: JobSettings | None = None
    """Account, QOS, constraint, reservation of its jobs (None: the site's, resolved late)."""
    knobs: tuple[tuple[str, Any], ...] = ()
    """The tasks' own Slurm knobs this pool is for (empty: the site's)."""
    limit: WalltimeLimit | None = None
    """The walltime limit its jobs were checked against."""

    @property
    def cores(self) -> int:
        return self.partition.node.cores

    @property
    def memory(self) -> int:
        return self.partition.node.memory

    @property
    def gpus(self) -> int:
        return self.partition.node.gpus


def _knobs_suffix(knobs: tuple[tuple[str, Any], ...]) -> str:
    """A short, script-safe name for a pool's knobs (``-qos_regular``...)."""
    if not knobs:
        return ""
    digest = hashlib.sha1(repr(knobs).encode()).hexdigest()[:6]
    return f"-k{digest}"


def plan_pools(spec: WorkflowSpec, site: Site, *, prefix: str = "") -> list[PoolPlan]:
    """Pools for ``spec`` on ``site``: one per partition some task fits best, sized by demand.

    Tasks no partition of ``site`` runs are left out (another site may take
    them); ``prefix`` names the pools of a run's additional sites. Tasks that
    span ``N > 1`` nodes (MPI) get a pool of ``N``-node jobs of their own,
    ``<partition>-<N>nodes``, whose steps run inside those jobs; tasks with Slurm
    knobs of their own (QOS, constraint, reservation, account, exclusive) get a
    pool of their knobs, ``<partition>-k<hash>``. Every pool's jobs are checked
    against the site's rules (:func:`hpcorch.sites.rules.check_job`): a
    :class:`~hpcorch.errors.SiteRuleError` if the site would refuse them.
    """
    demand: dict[tuple[str, int, tuple[tuple[str, Any], ...]], int] = {}
    estimates: dict[tuple[str, int, tuple[tuple[str, Any], ...]], list[float | None]] = {}
    walltimes: dict[tuple[str, int, tuple[tuple[str, Any], ...]], list[tuple[str, float]]] = {}
    partitions: dict[str, Partition] = {}
    for task, count in shape_counts(spec.tasks):  # a sweep's tasks share one shape
        try:
            part = partition_for(task, site)
        except ResourceError:
            continue
        partitions[part.name] = part
        key = (part.name, task.nodes, tuple(sorted(task.slurm_knobs.items())))
        demand[key] = demand.get(key, 0) + task.cpus * task.nodes * count
        estimates.setdefault(key, []).extend([task_estimate(task)] * count)
        if task.resources.walltime:
            walltimes.setdefault(key, []).append((task.id, task.resources.walltime))
    plans = []
    for (name, nodes, knobs), cores in demand.items():
        part = partitions[name]
        settings = job_settings(site, part, dict(knobs))
        pool = f"{prefix}{name}" if nodes == 1 else f"{prefix}{name}-{nodes}nodes"
        pool += _knobs_suffix(knobs)
        what = f"pool {pool}"
        limit = check_job(site, part, settings, nodes=nodes, walltime_s=None, what=what)
        for task_id, wall in walltimes.get((name, nodes, knobs), []):
            check_job(site, part, settings, nodes=nodes, walltime_s=wall, what=f"task {task_id}")
        jobs = max(1, min(part.nodes // nodes, math.ceil(cores / (part.node.cores * nodes))))
        walltime = walltime_for_tasks(
            estimates[(name, nodes, knobs)],
            jobs * nodes * part.node.cores,
            max_walltime_s=limit.seconds,
        )
        plans.append(PoolPlan(pool, part, jobs, walltime, site.name, nodes, settings, knobs, limit))
    # The default partition's pool first: it owns the scheduler.
    plans.sort(key=lambda p: (not p.partition.default, p.name))
    return plans


def job_options(plan: PoolPlan, site: Site, run_dir: Path) -> dict[str, Any]:
    """Keyword arguments of ``SLURMCluster``/``SLURMJob`` for one pool (pure)."""
    node = plan.partition.node
    settings = plan.settings or job_settings(site, plan.partition, dict(plan.knobs))
    resources = f"cpus={node.cores},memory={node.memory},gpus={node.gpus}"
    directives = list(site.prologue.directives)
    skip: list[str] = []
    if plan.nodes > 1:
        # One worker on the first node; the tasks' srun steps use all the nodes.

        resources += f",{span_resource(plan.nodes)}={node.cores}"
        directives += [f"--nodes={plan.nodes}", "--ntasks-per-node=1"]
        skip.append("#SBATCH -n 1")
    if plan.knobs:  # only tasks with these knobs run here (hpcorch.placement.placing)
        sample = TaskSpec(id="knobs", duration=0, **dict(plan.knobs))
        resources += f",{knobs_resource(sample)}={node.cores}"
    directives += gpu_directives(plan.partition, nodes=plan.nodes)
    directives += settings_directives(settings)
    prologue = prologue_lines(site.prologue)
    if plan.partition.modules:  # the pool's own, after the site's
        prologue += prologue_lines(Prologue(modules=plan.partition.modules))
    # slurmrestd's token (under whatever name the site gives it) breaks srun inside the
    # job, and no task may see it; the submission already leaves it out (_job_class).
    prologue.append(f"unset {shlex.join(site_secrets(site))}")
    # A worker's HTTP port is not covered by TLS: it serves nothing (provision.security).
    prologue += [f"export {k}={shlex.quote(v)}" for k, v in NO_HTTP_ENV.items()]
    # Job ids repeat across sites: attempt records name the site of theirs (engine.worker).
    prologue.append(f"export HPCORCH_SITE={shlex.quote(site.name)}")
    options: dict[str, Any] = {
        "queue": plan.partition.name if plan.partition.select_by_name else None,
        "cores": node.cores,
        "processes": 1,
        "memory": f"{node.memory // 1024**2}MiB",
        # Slurm's M is MiB; jobqueue would round the request up past the node's memory.
        "job_mem": f"{node.memory // 1024**2}M",
        "walltime": format_duration(plan.walltime_s),
        "job_extra_directives": directives,
        "job_directives_skip": skip,
        "job_script_prologue": prologue,
        "worker_extra_args": ["--resources", resources, *site.dask.worker_extra_args],
        "python": _worker_python(plan, site, run_dir),
        "log_directory": str(run_dir / "slurm"),
        "job_name": f"hpcorch-{plan.name}",
    }
    # Always set: a pool without one must not inherit another pool's (SpecCluster merges).
    options["account"] = settings.account
    if site.dask.interface:
        options["interface"] = site.dask.interface
    if site.dask.local_directory:
        options["local_directory"] = site.dask.local_directory
    return options


# What a worker started in a container must see of its job's environment (podman starts
# from the image's): Slurm's job variables, and what the prologue exported.
_WORKER_ENV = ("SLURM_*", "SLURMD_NODENAME", "HPCORCH_SITE", *NO_HTTP_ENV)


def _worker_python(plan: PoolPlan, site: Site, run_dir: Path) -> str:
    """The Python that starts the pool's workers: this one, or the image's inside the
    site's container for the pool's partition (the run directory bound: TLS keys, logs)."""
    container = site.container_for(plan.partition)
    if container is None:
        return sys.executable
    argv = container_argv(
        container,
        [container.python],
        gpus=plan.gpus > 0,
        env_names=_WORKER_ENV,
        extra_binds=[str(run_dir)],
    )
    return shlex.join(argv)


def _job_class(site: Site) -> Any:
    """A SLURMJob that submits and cancels on ``site`` (its SLURM_CONF, never a secret:
    sbatch exports the caller's environment into the job)."""
    from dask_jobqueue.slurm import SLURMJob  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts

    conf = slurm_conf_path(site)
    secrets = sorted({*site_secrets(site), *secret_names(os.environ, site_secrets(site))})
    unset = [arg for name in secrets for arg in ("-u", name)]
    prefix = ["env", *unset, *([f"SLURM_CONF={conf}"] if conf else [])]

    class SiteJob(SLURMJob):
        submit_command = shlex.join([*prefix, "sbatch"])
        cancel_command = shlex.join([*prefix, "scancel"])

    SiteJob.__name__ = SiteJob.__qualname__ = f"SLURMJob[{site.name}]"
    return SiteJob


class _DaskPools:
    """The scaler's :class:`~hpcorch.provision.scaler.PoolRuntime` over one SLURMCluster."""

    def __init__(
        self, cluster: Any, options: Mapping[str, dict[str, Any]], classes: Any, client: Any = None
    ) -> None:
        self.cluster = cluster
        self.options = options
        self.classes = classes
        self.client = client

    def submit(self, pool: str, names: Sequence[str], walltime_s: float) -> dict[str, str | None]:
        cluster = self.cluster
        options = dict(self.options[pool])
        args = list(options.get("worker_extra_args") or ())
        if "--resources" in args:  # hpcorch's pools: the walltime tiers it starts with
            at = args.index("--resources") + 1
            args[at] = f"{args[at]},{resources_arg(walltime_s)}"
        options.update(walltime=format_duration(walltime_s), worker_extra_args=args)
        spec = {"cls": self.classes[pool], "options": options}

        async def add() -> None:
            for name in names:
                cluster.worker_spec[name] = spec
            await cluster._correct_state()

        try:
            cluster.sync(add)
        except Exception as exc:
            logger.warning("submitting %d job(s) to pool %s failed: %s", len(names), pool, exc)
        ids = {n: getattr(cluster.workers.get(n), "job_id", None) for n in names}
        failed = [n for n, i in ids.items() if i is None]
        if failed:
            self.release(failed)
        return ids

    def release(self, names: Sequence[str]) -> None:
        cluster = self.cluster

        async def remove() -> None:
            known = [n for n in names if n in cluster.worker_spec]
            if not known:
                return
            try:  # idle by now; retiring first hands any late task back to the scheduler
                await asyncio.wait_for(cluster.scheduler.retire_workers(names=known), 30)
            except Exception as exc:
                logger.debug("retiring %s: %s", known, exc)
            for name in known:
                cluster.worker_spec.pop(name, None)
            await cluster._correct_state()

        try:
            cluster.sync(remove)
        except Exception as exc:
            logger.warning("ending job(s) %s failed: %s; check squeue", ", ".join(names), exc)

    def set_resources(self, address: str, resources: dict[str, float]) -> None:
        if self.client is not None:  # hpcorch's pools; plain dask-jobqueue tasks ask no tier
            self.client.run(set_worker_resources, resources, workers=[address])

    def busy(self) -> dict[str, tuple[str, int, int]]:
        scheduler = self.cluster.scheduler

        async def snapshot() -> dict[str, tuple[str, int, int]]:
            return {
                str(ws.name): (str(ws.address), len(ws.processing), _holding(ws))
                for ws in scheduler.workers.values()
            }

        result: dict[str, tuple[str, int, int]] = self.cluster.sync(snapshot)
        return result

    def queued_keys(self) -> list[str]:
        """Keys of the tasks no worker runs yet (to cancel when the budget is spent)."""
        scheduler = self.cluster.scheduler

        async def keys() -> list[str]:
            waiting = ("released", "waiting", "queued", "no-worker")
            return [str(k) for k, ts in scheduler.tasks.items() if ts.state in waiting]

        result: list[str] = self.cluster.sync(keys)
        return result


def _holding(ws: Any) -> int:
    """Results only this worker holds that a task still to run needs (lost if it goes)."""
    done = ("memory", "erred", "forgotten")
    return sum(
        1
        for ts in ws.has_what
        if len(ts.who_has) == 1 and any(d.state not in done for d in ts.dependents)
    )


def _load(task: TaskSpec, sites: Sequence[Site]) -> Load:
    candidates = []
    for site in sites:
        try:
            candidates.append((site.name, partition_for(task, site).name))
        except ResourceError:
            continue
    return Load(
        task.id,
        Resources(
            cpus=task.cpus,
            memory=task.resources.memory,
            gpus=math.ceil(task.gpus),
            walltime_s=task.resources.walltime,
            nodes=task.nodes,
        ),
        task_estimate(task),
        candidates=tuple(candidates),
    )


class _JournalDemand:
    """The engine's ready and running tasks, read from the run's journal, plus the tasks
    about to be ready (:func:`hpcorch.policies.scale.about_ready`), counted as queued.

    The engine writes every task's state there (``pending``, ``running``, then
    a terminal one); a pending task whose parents all succeeded is ready.
    Reading the journal keeps the scaler independent of the engine loop.
    """

    def __init__(
        self,
        spec: WorkflowSpec,
        run_dir: Path,
        sites: Sequence[Site],
        config: ScaleConfig | None = None,
    ) -> None:

        self.run_dir = run_dir
        self.config = config or ScaleConfig()
        self.parents = {t.id: tuple(t.after) for t in spec.tasks}
        self.loads: dict[str, Load] = {}
        # a sweep's tasks share their template's request, estimate and candidates
        shared: dict[int, tuple[TaskSpec, Load]] = {}
        for task in spec.tasks:
            twin = resource_twin(task)
            if twin is task:
                self.loads[task.id] = _load(task, sites)
                continue
            hit = shared.get(id(twin))
            if hit is None:
                hit = shared[id(twin)] = (twin, _load(twin, sites))
            base = hit[1]
            self.loads[task.id] = Load(
                task.id, base.resources, base.estimate_s, candidates=base.candidates
            )
        self.estimates = {tid: load.estimate_s for tid, load in self.loads.items()}

    def __call__(self) -> list[Load]:

        states = state_of_tasks(self.run_dir)
        phase: dict[str, str] = {}
        for tid, state in states.items():
            if state == "succeeded":
                phase[tid] = "done"
            elif state == "running":
                phase[tid] = "running"
            elif state == "pending" and all(
                states.get(p) == "succeeded" for p in self.parents.get(tid, ())
            ):
                phase[tid] = "ready"
        out = []
        for tid, state in states.items():
            load = self.loads.get(tid)
            if load is None:
                continue
            if phase.get(tid) == "running":
                out.append(replace(load, running=True))
            elif phase.get(tid) == "ready" or (
                state == "pending"
                and about_ready(self.parents[tid], phase, self.estimates, self.config)
            ):
                out.append(load)
        return out


def _base_name(plan: PoolPlan) -> str:
    """The name of the partition's single-node pool of the site's knobs (which may not
    exist): the name the region router knows the partition by."""
    name = plan.name.removesuffix(_knobs_suffix(plan.knobs))
    return name.removesuffix(f"-{plan.nodes}nodes") if plan.nodes > 1 else name


class _SpanRouter:
    """The region router, with tasks spanning N nodes sent to their partition's
    N-node pool and tasks with Slurm knobs of their own to their knobs' pool (the
    router itself knows one pool per site and partition)."""

    def __init__(
        self,
        router: Routing,
        spans: Mapping[tuple[str, int, tuple[tuple[str, Any], ...]], str],
        knobs: Mapping[str, tuple[tuple[str, Any], ...]] | None = None,
    ) -> None:
        self.router = router
        self.spans = dict(spans)
        self.knobs = dict(knobs or {})
        self.base = {pool: base for (base, _, _), pool in self.spans.items()}

    @property
    def message(self) -> str | None:
        return self.router.message

    @message.setter
    def message(self, value: str | None) -> None:
        self.router.message = value

    def route(self, load: Load, now: float) -> str | None:
        pool = self.router.route(load, now)
        if pool is None:
            return None
        key = (pool, load.resources.nodes, self.knobs.get(load.task_id, ()))
        return self.spans.get(key, pool)

    def hold(self, lives: Sequence[AllocationLife], now: float) -> str | None:
        return self.router.hold(lives, now)

    def expected_wait(self, site: str) -> float | None:
        return self.router.expected_wait(site)

    def affordable(
        self, submit: Submit, lives: Sequence[AllocationLife], now: float
    ) -> tuple[int, str]:
        base = replace(submit, pool=self.base.get(submit.pool, submit.pool))
        return self.router.affordable(base, lives, now)


class SlurmWorkers:
    """A SLURMCluster whose pools the scaler sizes with demand, and a TLS client to it."""

    def __init__(
        self,
        site: Site,
        spec: WorkflowSpec,
        run_dir: Path,
        *,
        plans: Sequence[PoolPlan] | None = None,
        security: Any = None,
        regions: Sequence[Site] | None = None,
        options: RunOptions | None = None,
    ) -> None:
        import dask.config  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts
        from dask_jobqueue.slurm import SLURMCluster  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts
        from distributed import Client  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts

        options = options or RunOptions()
        self.site = site
        self.sites = {site.name: site}
        for extra in regions if regions is not None else resolve_regions(options.regions):
            if extra.name != site.name:
                self.sites[extra.name] = extra
        self.budget: Budget | None = options.budget
        self.settings = options.scaler
        if plans is not None:
            self.plans = list(plans)
        else:
            self.plans = plan_pools(spec, site)
            for name, extra in self.sites.items():
                if name != site.name:
                    self.plans += plan_pools(spec, extra, prefix=f"{name}.")
        self.plans = [p if p.site else replace(p, site=site.name) for p in self.plans]
        self.run_dir = run_dir
        tls_dir = private_dir(run_dir / "tls")  # the workers' keys, 0600 (dask-jobqueue)
        (run_dir / "slurm").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.security = security if security is not None else temporary_security()
        first = self.plans[0]
        # The scheduler's HTTP port is not covered by TLS: serve nothing on it but the
        # dashboard when asked for, and only on localhost (hpcorch.provision.dashboard).
        port, scheduler_options, http_config = dashboard.http_settings(options.dashboard)
        self._cluster: Any = None
        self._client: Any = None
        self.scaler: Scaler | None = None
        self._journal: Journal | None = None
        try:
            with dask.config.set(http_config):
                self._cluster = SLURMCluster(
                    job_cls=_job_class(self.sites[first.site]),
                    security=self.security,
                    shared_temp_directory=str(tls_dir),
                    scheduler_options=scheduler_options,
                    **job_options(first, self.sites[first.site], run_dir),
                )
            # SpecCluster's worker template: the job options the constructor resolved.
            base = dict(self._cluster.new_spec["options"])
            classes = {name: _job_class(s) for name, s in self.sites.items()}
            self._pools = _DaskPools(
                self._cluster,
                {
                    p.name: {**base, **job_options(p, self.sites[p.site], run_dir)}
                    for p in self.plans
                },
                {p.name: classes[p.site] for p in self.plans},
            )
            self._client = Client(  # type: ignore[no-untyped-call]
                self._cluster, security=self.security, set_as_default=False
            )
            self._pools.client = self._client
            self.scaler = self._start_scaler(spec)
            if port is not None:
                dashboard.announce(self._cluster.scheduler)
        except Exception as exc:
            self.close()
            raise InfrastructureError(
                f"cannot start Dask workers on site {site.name!r}: {exc}; "
                f"see the job logs in {run_dir / 'slurm'}"
            ) from exc
        logger.info(
            "site %s: scheduler %s, pools %s (scaled from zero every %.0fs)",
            site.name,
            self._cluster.scheduler_address,
            ", ".join(f"{p.name} up to {p.jobs}" for p in self.plans),
            self.settings.interval_s,
        )

    def _start_scaler(self, spec: WorkflowSpec) -> Scaler:

        self._journal = journal = Journal.open(self.run_dir)
        shapes = [
            (
                PoolShape(
                    name=p.name,
                    site=p.site,
                    partition=p.partition.name,
                    max_walltime_s=p.limit.seconds
                    if p.limit is not None
                    else p.partition.max_walltime_s or self.sites[p.site].limits.max_walltime_s,
                    max_allocations=p.jobs,
                    nodes_per_allocation=p.nodes,
                ),
                charge_rates(self.sites[p.site], p.partition.name),
            )
            for p in self.plans
        ]
        # One Slurm client per site: the scaler's job states and the router's queue probes.
        clients = {name: connect(s) for name, s in self.sites.items()}
        router = _SpanRouter(
            Router(
                self.sites,
                {(p.site, p.partition.name): _base_name(p) for p in self.plans},
                budget=self.budget,
                clients=clients,
                default_estimate_s=self.settings.scale.walltime.default_estimate_s,
                journal=journal,
            ),
            {(_base_name(p), p.nodes, p.knobs): p.name for p in self.plans},
            {t.id: tuple(sorted(t.slurm_knobs.items())) for t in spec.tasks if t.slurm_knobs},
        )
        cpus = {t.id: t.cpus * t.nodes for t in spec.tasks}
        scaler = Scaler(
            shapes,
            {name: site_limits(s) for name, s in self.sites.items()},
            self._pools,
            PollerStates(clients, self.settings.interval_s),
            _JournalDemand(spec, self.run_dir, list(self.sites.values()), self.settings.scale),
            router,
            journal=journal,
            attempts=lambda lives: journal_attempts(self.run_dir, lives, cpus),
            settings=self.settings,
            on_stranded=self._stranded,
        )
        scaler.start()
        return scaler

    def _stranded(self, message: str) -> None:
        """The budget is spent and nothing runs: end the queued tasks, saying why."""
        from distributed import Future  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts

        logger.error("%s", message)
        keys = self._pools.queued_keys()
        if keys:
            futures: list[Any] = [Future(k, self._client) for k in keys]
            # a reason the engine tells from a lost connection (which it resubmits)
            self._client.cancel(futures, force=True, reason="budget-spent", msg=message)

    def kick(self) -> None:
        """Scale now rather than at the next interval (the run's tasks were just submitted)."""
        if self.scaler is not None:
            self.scaler.kick()

    def use_monitor(self, monitor: AllocationWatch) -> None:
        """Follow this site's allocations through the run's monitor (one poll for the run)."""

        if self.scaler is None:
            return
        others = self.scaler.states
        if isinstance(others, PollerStates):
            others.drop(self.site.name)
        self.scaler.use_states(MonitorStates(monitor, self.site.name, others))

    @property
    def client(self) -> Any:
        return self._client

    def allocations(self) -> list[dict[str, Any]]:
        """The run's live allocations, for the journal (ended ones are already there)."""
        if self.scaler is None:
            return []
        return self.scaler.live_rows()

    def close(self) -> None:
        try:
            if self.scaler is not None:
                try:
                    self.scaler.finish()
                except Exception:
                    logger.exception("could not end the run's allocations cleanly; check squeue")
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
            if self._journal is not None:
                self._journal.close()
                self._journal = None

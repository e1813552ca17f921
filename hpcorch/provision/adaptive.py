"""``cluster.adapt()`` for dask-jobqueue users, with hpcorch's scale policy underneath.

Existing code keeps its ``SLURMCluster`` and its ``adapt`` call::

    from hpcorch.provision.adaptive import HpcorchSLURMCluster as SLURMCluster

    cluster = SLURMCluster(queue="cpu", cores=8, memory="7GB", walltime="01:00:00")
    cluster.adapt(minimum_jobs=0, maximum_jobs=4)   # hpcorch's Scaler, not dask's Adaptive
    client = Client(cluster)

:meth:`HpcorchSLURMCluster.adapt` installs a :class:`~hpcorch.provision.scaler.Scaler`
with one pool of the cluster's jobs: the demand is the scheduler's tasks
(waiting for a worker, or processing) with Dask's own duration estimates;
the policy's cool-down, hysteresis and idle release replace Adaptive's
``wait_count`` and ``target_duration``; each job asks for the walltime the
work needs (up to the cluster's ``walltime``). ``minimum``/``maximum`` count
workers as in dask-jobqueue (one per job here), ``minimum_jobs``/
``maximum_jobs`` count jobs. ``adapt()`` returns the scaler: ``.submitted``,
``.account()``, ``.stop()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dask_jobqueue.slurm import SLURMCluster, SLURMJob

from hpcorch.options import ScalerSettings
from hpcorch.policies.scale import ScaleConfig, Submit
from hpcorch.policies.state import (
    ChargeRates,
    PartitionLimits,
    PoolShape,
    Resources,
    SiteLimits,
)
from hpcorch.provision.accounting import AllocationLife
from hpcorch.provision.regions import ObservedWaits
from hpcorch.provision.scaler import Load, PollerStates, Scaler
from hpcorch.provision.slurm_pool import _DaskPools
from hpcorch.slurm.cli import CliClient
from hpcorch.units import parse_duration

__all__ = ["HpcorchSLURMCluster", "scheduler_demand"]

_POOL = "jobs"
_SITE = "slurm"
_WAITING = ("no-worker", "queued", "waiting")


def scheduler_demand(cluster: Any) -> list[Load]:
    """The scheduler's runnable-but-waiting and processing tasks, as scaler demand.

    Each task takes one core (one worker thread); its estimate is Dask's
    duration estimate for its task prefix.
    """
    scheduler = cluster.scheduler

    async def snapshot() -> list[tuple[str, bool, float]]:
        out = []
        for ts in scheduler.tasks.values():
            if ts.state == "processing" or (
                ts.state in _WAITING and all(d.state == "memory" for d in ts.dependencies)
            ):
                estimate = scheduler._get_prefix_duration(ts.prefix)
                out.append((str(ts.key), ts.state == "processing", float(estimate)))
        return out

    rows: list[tuple[str, bool, float]] = cluster.sync(snapshot)
    candidates = ((_SITE, _POOL),)
    return [
        Load(key, Resources(cpus=1), max(estimate, 1.0), running, candidates)
        for key, running, estimate in rows
    ]


class _OnePool:
    """Routing for one pool and no budget; keeps the pool's observed wait."""

    message: str | None = None

    def __init__(self) -> None:
        self.waits = ObservedWaits()

    def route(self, load: Load, now: float) -> str | None:
        return _POOL

    def expected_wait(self, site: str) -> float | None:
        return self.waits.get(site)

    def hold(self, lives: Sequence[AllocationLife], now: float) -> str | None:
        self.waits.observe(lives)
        return None

    def affordable(
        self, submit: Submit, lives: Sequence[AllocationLife], now: float
    ) -> tuple[int, str]:
        return submit.count, "no budget"


class HpcorchSLURMCluster(SLURMCluster):
    """dask-jobqueue's SLURMCluster whose ``adapt()`` runs hpcorch's scale policy."""

    _hpcorch_scaler: Scaler | None = None

    def adapt(  # type: ignore[override]
        self,
        minimum: int = 0,
        maximum: int | None = None,
        *,
        minimum_jobs: int | None = None,
        maximum_jobs: int | None = None,
        interval: str | float = "5s",
        idle_timeout: str | float = "60s",
        cooldown: str | float = "30s",
        drain_target: str | float = "5s",
        **_ignored: Any,
    ) -> Scaler:
        """Scale between ``minimum`` and ``maximum`` jobs with hpcorch's policy; see the module."""

        if self._hpcorch_scaler is not None:
            self._hpcorch_scaler.stop()
        processes = max(1, int(self._dummy_job.worker_processes))
        low = minimum_jobs if minimum_jobs is not None else math.ceil(minimum / processes)
        high = maximum_jobs if maximum_jobs is not None else maximum
        if high is not None and maximum_jobs is None:
            high = math.ceil(high / processes)
        options = dict(self.new_spec["options"])
        cores = int(self._dummy_job.worker_cores)
        walltime = options.get("walltime")
        limit = parse_duration(walltime) if walltime else None
        nodes = high if high is not None else 1_000_000
        limits = SiteLimits(
            _SITE,
            (
                PartitionLimits(
                    name=str(options.get("queue") or "default"),
                    nodes=nodes,
                    cores_per_node=cores,
                    memory_per_node=int(self._dummy_job.worker_memory),
                    max_walltime_s=limit,
                ),
            ),
        )
        shape = PoolShape(
            _POOL,
            _SITE,
            limits.partitions[0].name,
            max_walltime_s=limit,
            min_allocations=low,
            max_allocations=high,
        )
        runtime = _DaskPools(self, {_POOL: options}, {_POOL: self.new_spec.get("cls", SLURMJob)})
        settings = ScalerSettings(
            _seconds(interval),
            ScaleConfig(
                idle_timeout_s=_seconds(idle_timeout),
                cooldown_s=_seconds(cooldown),
                drain_target_s=_seconds(drain_target),
            ),
        )
        scaler = Scaler(
            [(shape, ChargeRates())],
            {_SITE: limits},
            runtime,
            PollerStates({_SITE: CliClient()}, settings.interval_s),
            lambda: scheduler_demand(self),
            _OnePool(),
            settings=settings,
        )
        scaler.start()
        self._hpcorch_scaler = scaler
        return scaler

    async def _close(self) -> None:
        if self._hpcorch_scaler is not None:
            self._hpcorch_scaler.stop()
            self._hpcorch_scaler.states.close()
        await super()._close()  # type: ignore[no-untyped-call]


def _seconds(value: str | float) -> float:
    return float(value) if isinstance(value, int | float) else parse_duration(value)

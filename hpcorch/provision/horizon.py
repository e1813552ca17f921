"""Walltime tiers: no task starts on a worker whose time left is below its estimate.

Dask places a task only on a worker that has the resources it asks for, so
the time a worker has left becomes resources: tier ``T`` (``"time_T"``,
``T`` seconds from :data:`TIERS_S`) is present on a worker while
:func:`hpcorch.policies.walltime.fits` says a task of ``T`` seconds may still
start there (time left, less the wind-down, covers ``T`` plus margin). A task
with estimate ``E`` asks for one unit of the smallest tier ``T >= E``
(:func:`restriction`): since ``T >= E``, a worker with the tier has time for
the task. Tiers are plentiful (:data:`CAPACITY` units), so they never limit
how many tasks run at once; only whether they may start.

A worker starts with the tiers of its job's walltime (:func:`tiers`, put on
its command line); the scaler takes tiers away as the walltime runs out
(:func:`set_worker_resources` on that worker only, when a tier changes). In
its last ``wind_down_s`` a worker has no tier left: it takes no new task, and
the scaler retires it when idle.
"""

from __future__ import annotations

from typing import Any

from hpcorch.policies.walltime import DEFAULT_BUCKETS_S, WalltimeConfig, fits
from hpcorch.spec import TaskSpec

__all__ = [
    "CAPACITY",
    "TIERS_S",
    "resources_arg",
    "restriction",
    "set_worker_resources",
    "task_estimate",
    "tier_name",
    "tiers",
]

TIERS_S: tuple[float, ...] = (30.0, 60.0, 120.0, *DEFAULT_BUCKETS_S)
CAPACITY = 1_000_000.0
_DEFAULT = WalltimeConfig()


def task_estimate(task: TaskSpec) -> float | None:
    """Seconds the task is expected to run: its emulated duration, else its walltime."""
    return task.duration if task.duration is not None else task.resources.walltime


def tier_name(seconds: float) -> str:
    return f"time_{int(seconds)}"


def restriction(estimate_s: float | None, config: WalltimeConfig = _DEFAULT) -> dict[str, float]:
    """The tier a task with this estimate asks for (none beyond the last tier)."""
    estimate = config.default_estimate_s if estimate_s is None else estimate_s
    for tier in TIERS_S:
        if tier >= estimate:
            return {tier_name(tier): 1.0}
    return {}


def tiers(remaining_s: float, config: WalltimeConfig = _DEFAULT) -> dict[str, float]:
    """Every tier with its amount on a worker with ``remaining_s`` left (0: gone)."""
    return {tier_name(t): CAPACITY if fits(t, remaining_s, config) else 0.0 for t in TIERS_S}


def resources_arg(remaining_s: float, config: WalltimeConfig = _DEFAULT) -> str:
    """The tiers a worker starts with, for ``dask worker --resources``."""
    return ",".join(f"{k}={v:g}" for k, v in tiers(remaining_s, config).items() if v)


async def set_worker_resources(dask_worker: Any, resources: dict[str, float]) -> None:
    """Run on a worker (``client.run``): change its resources, scheduler included."""
    await dask_worker.set_resources(**resources)

"""Bundling: which small tasks share one Dask task, and how many of them.

Every Dask task costs the scheduler about a millisecond and the driver a
round trip; a sweep of 10^5 to 10^6 tasks of a few milliseconds each is then
bound by that, not by the work. So independent function and command tasks with the same
resources run in bundles — one Dask task executing many hpcorch tasks one
after the other (a command still as a process of its own), each with its own
attempt, record, log and result
(:func:`hpcorch.engine.worker.execute_bundle`).

The size aims at bundles of :attr:`BundleConfig.target_s` seconds, from the
task durations observed so far: it starts at :attr:`BundleConfig.first_size`
and grows at most :attr:`BundleConfig.growth` times per step, so one slow task
cannot be stuck behind thousands. It never makes fewer bundles than there are
slots to fill (the last bundles of a sweep shrink so that all workers finish
together). A task that other tasks wait for is never bundled: it would hold
back the critical path behind its bundle-mates.

Pure functions over small frozen values; the engine keeps the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "BundleConfig",
    "BundleStats",
    "bundle_size",
    "bundling_on",
    "eligible",
    "in_flight_limit",
    "observe",
]


_KINDS = frozenset({"function", "command"})


@dataclass(frozen=True, slots=True)
class BundleConfig:
    target_s: float = 1.0
    """Seconds a bundle should take."""
    first_size: int = 4
    """Tasks in a bundle before any duration is known."""
    growth: float = 4.0
    """A bundle is at most this many times larger than the largest one seen so far."""
    max_size: int = 5_000
    auto_threshold: int = 5_000
    """A workflow with more tasks than this bundles unless told not to."""
    smoothing: float = 0.3
    """Weight of the newest observation in the per-task duration (exponential average)."""


@dataclass(frozen=True, slots=True)
class BundleStats:
    """What was observed: the smoothed seconds per task and the largest bundle so far."""

    per_task_s: float | None = None
    largest: int = 0


def bundling_on(n_tasks: int, switch: bool | None, config: BundleConfig = BundleConfig()) -> bool:
    """Whether a workflow of ``n_tasks`` bundles: its ``bundle`` switch, else by its size."""
    if switch is not None:
        return switch
    return n_tasks > config.auto_threshold


def eligible(
    *,
    kind: str,
    mpi: bool,
    switch: bool | None,
    workflow_on: bool,
    parents: int,
    children: int,
) -> bool:
    """Whether one task may run in a bundle.

    Function and command tasks (a command still runs as a process of its own; the
    bundle saves the scheduling round trip), not emulated ones (they exist to hold
    their slot for a time), not MPI steps, with no parent (it would wait for another
    bundle) and no child (it is on a path others wait for). ``switch``: the task's
    own ``bundle``; ``True`` bundles it even where the workflow would not.
    """
    if switch is False or kind not in _KINDS or mpi or parents or children:
        return False
    return switch is True or workflow_on


def observe(stats: BundleStats, tasks: int, seconds: float, config: BundleConfig) -> BundleStats:
    """``stats`` after a bundle of ``tasks`` tasks ran in ``seconds``."""
    if tasks <= 0:
        return stats
    per_task = max(seconds, 0.0) / tasks
    if stats.per_task_s is not None:
        a = config.smoothing
        per_task = a * per_task + (1 - a) * stats.per_task_s
    return BundleStats(per_task_s=per_task, largest=max(stats.largest, tasks))


def bundle_size(stats: BundleStats, waiting: int, slots: int, config: BundleConfig) -> int:
    """How many of the ``waiting`` tasks the next bundle takes, with ``slots`` worker slots."""
    if waiting <= 0:
        return 0
    if stats.per_task_s is None:
        size = config.first_size
    else:
        wanted = config.target_s / max(stats.per_task_s, 1e-6)
        size = min(int(wanted), int(max(stats.largest, 1) * config.growth))
    # Leave work for every slot: the tail of a sweep is cut into smaller bundles.
    size = min(size, math.ceil(waiting / max(slots, 1)), config.max_size)
    return max(1, min(size, waiting))


def in_flight_limit(slots: int) -> int:
    """Bundles submitted and not yet done: two per slot keeps every slot busy while the
    driver sends the next one, and a few even before workers exist (the scaler sees them)."""
    return max(2 * slots, 8)

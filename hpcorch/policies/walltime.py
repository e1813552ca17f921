"""Walltime: how long to ask an allocation for, and which worker may take which task.

Shorter requests start sooner on backfilling schedulers, so an allocation asks
for the time its tasks need, not the partition maximum:

1. the *span* of its work: with ``slots`` tasks at a time, greedy dispatch
   finishes within ``sum / slots + longest x (1 - 1/slots)`` (Graham's list
   scheduling bound), and never before the critical path of dependent tasks;
2. plus a margin (``margin_fraction`` of the span + ``margin_s``) and the
   wind-down time;
3. rounded up to a friendly bucket (5 m, 10 m, 15 m, 30 m, 45 m, 1 h, 1.5 h,
   2 h, 3 h, 4 h, 6 h, 8 h, 12 h, 16 h, 24 h, 36 h, 48 h, 72 h, then whole
   hours), so that requests repeat and the scheduler's estimates stay stable;
4. capped by the partition's limit.

On the worker side, :func:`fits` never starts a task on a worker whose time
left, less the wind-down, is below the task's estimate plus margin;
:func:`winding_down` tells a worker to take no new task in its last
``wind_down_s``. A task that fits no live allocation gets a fresh one
(:func:`needs_fresh_allocation`), sized by the scaler from its estimate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BUCKETS_S",
    "WalltimeConfig",
    "allocation_walltime",
    "fits",
    "needs_fresh_allocation",
    "padded",
    "round_up",
    "span",
    "walltime_for_tasks",
    "winding_down",
]

_M = 60.0
_H = 3600.0
DEFAULT_BUCKETS_S: tuple[float, ...] = (
    5 * _M,
    10 * _M,
    15 * _M,
    30 * _M,
    45 * _M,
    1 * _H,
    1.5 * _H,
    2 * _H,
    3 * _H,
    4 * _H,
    6 * _H,
    8 * _H,
    12 * _H,
    16 * _H,
    24 * _H,
    36 * _H,
    48 * _H,
    72 * _H,
)


@dataclass(frozen=True, slots=True)
class WalltimeConfig:
    margin_fraction: float = 0.10
    margin_s: float = 60.0
    wind_down_s: float = 60.0
    """A worker takes no new task in its last ``wind_down_s`` and retires."""
    default_estimate_s: float = 600.0
    """Estimate for a task that has none (no estimate, no walltime)."""
    buckets_s: tuple[float, ...] = DEFAULT_BUCKETS_S

    def __post_init__(self) -> None:
        if not self.buckets_s or list(self.buckets_s) != sorted(self.buckets_s):
            raise ValueError("buckets_s must be a non-empty ascending tuple of seconds")
        if min(self.margin_fraction, self.margin_s, self.wind_down_s) < 0:
            raise ValueError("margins and wind_down_s must not be negative")


def padded(estimate_s: float | None, config: WalltimeConfig = WalltimeConfig()) -> float:
    """A task's estimate plus margin: the time it must find on a worker."""
    estimate = config.default_estimate_s if estimate_s is None else estimate_s
    return estimate * (1 + config.margin_fraction) + config.margin_s


def fits(
    task_estimate_s: float | None,
    worker_remaining_s: float,
    config: WalltimeConfig = WalltimeConfig(),
) -> bool:
    """May a task with this estimate start on a worker with this much walltime left?"""
    return worker_remaining_s - config.wind_down_s >= padded(task_estimate_s, config)


def winding_down(worker_remaining_s: float, config: WalltimeConfig = WalltimeConfig()) -> bool:
    """Is the worker in its last ``wind_down_s``: take no new task, retire when idle."""
    return worker_remaining_s <= config.wind_down_s


def needs_fresh_allocation(
    task_estimate_s: float | None,
    workers_remaining_s: Iterable[float],
    config: WalltimeConfig = WalltimeConfig(),
) -> bool:
    """True when no live worker has time left for the task: it needs a new allocation."""
    return not any(fits(task_estimate_s, left, config) for left in workers_remaining_s)


def span(estimates_s: Sequence[float], slots: int, critical_path_s: float = 0.0) -> float:
    """Time for ``slots`` parallel workers to run all the tasks by greedy dispatch (upper bound)."""
    if not estimates_s:
        return critical_path_s
    slots = max(1, slots)
    longest = max(estimates_s)
    bound = sum(estimates_s) / slots + longest * (1 - 1 / slots)
    return max(bound, longest, critical_path_s)


def round_up(seconds: float, buckets_s: Sequence[float] = DEFAULT_BUCKETS_S) -> float:
    """The smallest bucket at or above ``seconds``; beyond the last, whole hours."""
    for bucket in buckets_s:
        if seconds <= bucket:
            return bucket
    return math.ceil(seconds / _H) * _H


def allocation_walltime(
    span_s: float,
    *,
    max_walltime_s: float | None = None,
    config: WalltimeConfig = WalltimeConfig(),
) -> float:
    """Walltime to request for an allocation whose work spans ``span_s`` seconds."""
    needed = span_s * (1 + config.margin_fraction) + config.margin_s + config.wind_down_s
    walltime = round_up(needed, config.buckets_s)
    if max_walltime_s is not None:
        walltime = min(walltime, max_walltime_s)
    return walltime


def walltime_for_tasks(
    estimates_s: Sequence[float | None],
    slots: int,
    *,
    max_walltime_s: float | None = None,
    critical_path_s: float = 0.0,
    config: WalltimeConfig = WalltimeConfig(),
) -> float:
    """Walltime for an allocation with ``slots`` task slots that will carry these tasks."""
    estimates = [config.default_estimate_s if e is None else e for e in estimates_s]
    return allocation_walltime(
        span(estimates, slots, critical_path_s), max_walltime_s=max_walltime_s, config=config
    )

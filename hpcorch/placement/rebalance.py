"""Move resource-restricted tasks off oversubscribed workers onto idle ones.

Dask assigns a task with resource restrictions (``cpus=4``) to a worker as soon
as it is ready, whether or not that worker has the resources free right now,
and its work stealing never moves restricted tasks. When a pool scales up,
the first worker to connect takes the whole ready queue and the workers that
join a second later sit idle (a dev run: four 4-core tasks queued on one
8-core worker while a second 8-core worker idled 70 s).

This scheduler plugin fixes that: every interval it finds workers whose
assigned restricted tasks need more than they have, and asks the stealing
extension's protocol (``steal-request``: the victim gives a task up only if
it has not started it) to move the ones it would run last to less loaded
workers, until the backlogs are even. :func:`plan_moves` is the pure
decision; the plugin applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

__all__ = ["Rebalancer", "WorkerLoad", "plan_moves"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerLoad:
    """One worker: what it has, and the restricted tasks assigned to it (first to run first)."""

    address: str
    capacity: Mapping[str, float]
    tasks: Sequence[tuple[str, Mapping[str, float]]] = field(default_factory=tuple)


def _level(load: Mapping[str, float], capacity: Mapping[str, float]) -> float:
    """How loaded a worker is: its assigned tasks' dominant share of its resources."""
    return max((load.get(r, 0.0) / c for r, c in capacity.items() if c > 0), default=0.0)


def _holds(need: Mapping[str, float], capacity: Mapping[str, float]) -> bool:
    """Whether the worker could ever run the task (every resource, in full)."""
    return all(capacity.get(r, 0.0) >= amount for r, amount in need.items())


def plan_moves(workers: Sequence[WorkerLoad]) -> list[tuple[str, str, str]]:
    """``(key, victim, thief)`` moves that even out the backlogs of oversubscribed workers.

    A victim is a worker whose assigned tasks need more than it has: it keeps
    the tasks it runs first (they may already run) and gives up the last ones,
    each to the least loaded worker that could run it, while that leaves the
    thief less loaded than the victim was. Filling a thief only up to its free
    room would leave it idle between two rebalancing rounds while the victim
    still holds a long queue.
    """
    load: dict[str, dict[str, float]] = {}
    for w in workers:
        assigned: dict[str, float] = {}
        for _, need in w.tasks:
            for r, amount in need.items():
                assigned[r] = assigned.get(r, 0.0) + amount
        load[w.address] = assigned

    def level(w: WorkerLoad, extra: Mapping[str, float] | None = None) -> float:
        assigned = load[w.address]
        if extra:
            assigned = {r: assigned.get(r, 0.0) + extra.get(r, 0.0) for r in {*assigned, *extra}}
        return _level(assigned, w.capacity)

    moves: list[tuple[str, str, str]] = []
    for victim in sorted(workers, key=level, reverse=True):
        for key, need in reversed(victim.tasks):
            before = level(victim)
            if before <= 1.0:
                break
            thieves = [t for t in workers if t is not victim and _holds(need, t.capacity)]
            thief = min(thieves, key=lambda t: level(t, need), default=None)
            if thief is None or level(thief, need) >= before:
                continue
            moves.append((key, victim.address, thief.address))
            for r, amount in need.items():
                load[victim.address][r] = load[victim.address].get(r, 0.0) - amount
                load[thief.address][r] = load[thief.address].get(r, 0.0) + amount
    return moves


class Rebalancer(SchedulerPlugin):
    """Runs :func:`plan_moves` on the scheduler every ``interval_s`` seconds."""

    name = "hpcorch-rebalance"

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self._callback: Any = None
        self._scheduler: Any = None

    async def start(self, scheduler: Any) -> None:

        self._scheduler = scheduler
        self._callback = PeriodicCallback(self.balance, self.interval_s * 1000)
        self._callback.start()

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()

    def balance(self) -> None:
        scheduler = self._scheduler
        stealing = scheduler.extensions.get("stealing")
        if stealing is None or len(scheduler.workers) < 2:
            return
        # A task being moved counts on its thief already, so no thief is promised twice.
        moving: dict[str, list[Any]] = {}
        for ts, info in stealing.in_flight.items():
            if ts.resource_restrictions:
                moving.setdefault(info["thief"].address, []).append(ts)
        loads = []
        tasks: dict[str, Any] = {}
        for ws in scheduler.workers.values():
            if ws.status.name != "running":
                continue
            restricted = sorted(
                (
                    ts
                    for ts in ws.processing
                    if ts.resource_restrictions and ts not in stealing.in_flight
                ),
                key=lambda ts: ts.priority,
            )
            tasks.update((ts.key, ts) for ts in restricted)
            incoming = moving.get(ws.address, [])
            loads.append(
                WorkerLoad(
                    ws.address,
                    dict(ws.resources),
                    tuple(
                        (ts.key, dict(ts.resource_restrictions)) for ts in [*incoming, *restricted]
                    ),
                )
            )
        for key, victim, thief in plan_moves(loads):
            ts = tasks.get(key)
            if ts is None:  # an incoming task: it is not the victim's to give
                continue
            logger.debug("moving %s from %s to %s", key, victim, thief)
            stealing.move_task_request(ts, scheduler.workers[victim], scheduler.workers[thief])

"""Autoscaling: how many allocations each pool should have, as a pure function.

:func:`decide_scale` reads the demand of each pool (:class:`PoolDemand`), the
live allocations, the pool shapes, the sites' limits, the pools' scaling
history and the time, and returns a :class:`ScalePlan`: allocations to submit
and allocations to release, each with a reason for the journal, plus notes on
what it held back and why. The engine and the simulator apply the plan and
keep the history with :func:`record`.

Demand (:func:`estimate_nodes`): nodes to run the running tasks plus enough to
finish the queued work within ``horizon = max(drain_target_s, expected_wait_s)``:
``running_share + min(queued_share, max(queued_node_s / horizon, widest))``;
never fewer than the widest queued task needs, never more than running
everything queued at once. ``drain_target_s`` is short (Dask's adaptive
``target_duration`` is 5 s too); the pool's observed wait stretches it, since
an allocation that starts after the queued work has drained only sits idle.
The engine counts as queued the tasks about to be ready (their unfinished
parents are all ready or running and each expected to take at most
``lookahead_s``), so the nodes for a fan-out are asked for with its parent's.
:func:`target_allocations` turns that into allocations, between the pool's
``min_allocations`` and its ``max_allocations`` and the partition's size.

Never thrash:

- pending allocations count as capacity, so a slow queue never causes a
  second request for the same work;
- a change must exceed the hysteresis: scale up by at least
  ``max(1, hysteresis x capacity)`` allocations; scale down only to
  ``target x (1 + hysteresis)``;
- cool-down: no scale-down within ``cooldown_s`` of a scale-up, and no
  scale-up within ``cooldown_s`` of a scale-down, per pool;
- an allocation is released only after ``idle_timeout_s`` idle (a pending one
  only ``idle_timeout_s`` after submission), least walltime left first, and
  down to zero once the work is done. An idle allocation that can take none of
  the queued tasks (too little walltime left) is *retired*: it is not counted
  as capacity, and retiring it starts no cool-down.

Limits: the allocations of a site, live plus requested plus ``other_jobs``
(the driver, other runs), never exceed its ``max_submit_jobs``; the nodes of a
partition's pools never exceed the partition's nodes. When limits leave less
than all pools want, pools with the largest deficit go first.
A pool whose queued tasks all need longer than its walltime limit allows gets
no allocation (it would be retired idle and asked for again, for ever); the
plan notes why.

Zero after the work: with no queued or running task, every allocation is
released ``max(idle_timeout_s, cooldown_s)`` after it became idle, at the
first decision after that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from hpcorch.policies.state import (
    Allocation,
    PartitionLimits,
    PoolDemand,
    PoolShape,
    Resources,
    SiteLimits,
)
from hpcorch.policies.walltime import WalltimeConfig, allocation_walltime, fits, winding_down
from hpcorch.units import format_duration

__all__ = [
    "SCALING_POLICIES",
    "PoolHistory",
    "Release",
    "ScaleConfig",
    "ScalePlan",
    "ScalePolicy",
    "Submit",
    "about_ready",
    "decide_scale",
    "decide_simple",
    "estimate_nodes",
    "pool_demand",
    "record",
    "scale_policy",
    "share",
    "target_allocations",
]

_EPS = 1e-9


DEFAULT_INTERVAL_S = 5.0
"""Seconds between two scaling decisions, live and in the simulator alike."""


@dataclass(frozen=True, slots=True)
class ScaleConfig:
    idle_timeout_s: float = 60.0
    cooldown_s: float = 30.0
    hysteresis: float = 0.1
    drain_target_s: float = 5.0
    """Aim to run the queued work within this time (at least the pool's expected wait), as
    parallel as limits allow."""
    lookahead_s: float = 30.0
    """Tasks whose unfinished parents are all ready or running, each expected to take at
    most this long, count as queued demand (see :func:`about_ready`)."""
    walltime: WalltimeConfig = field(default_factory=WalltimeConfig)

    def __post_init__(self) -> None:
        if min(self.idle_timeout_s, self.cooldown_s, self.hysteresis) < 0:
            raise ValueError("idle_timeout_s, cooldown_s and hysteresis must not be negative")
        if self.drain_target_s <= 0:
            raise ValueError("drain_target_s must be positive")
        if self.lookahead_s < 0:
            raise ValueError("lookahead_s must not be negative")


@dataclass(frozen=True, slots=True)
class Submit:
    """Submit ``count`` allocations of ``nodes`` nodes for ``walltime_s`` to ``pool``."""

    pool: str
    count: int
    nodes: int
    walltime_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Release:
    """Cancel allocation ``allocation`` (its Slurm job id) of ``pool``."""

    allocation: str
    pool: str
    reason: str
    surplus: bool = True
    """False when retired because it can take none of the queued work (starts no cool-down)."""


@dataclass(frozen=True, slots=True)
class ScalePlan:
    submits: tuple[Submit, ...] = ()
    releases: tuple[Release, ...] = ()
    held: tuple[str, ...] = ()
    """What was wanted but held back (cool-down, limits, budget), and why."""

    @property
    def empty(self) -> bool:
        return not self.submits and not self.releases


@dataclass(frozen=True, slots=True)
class PoolHistory:
    last_up: float | None = None
    last_down: float | None = None


_NO_HISTORY = PoolHistory()
_DEFAULT = ScaleConfig()


def record(
    history: Mapping[str, PoolHistory], plan: ScalePlan, now: float
) -> dict[str, PoolHistory]:
    """History after applying ``plan`` at ``now`` (retirements do not count as a scale-down)."""
    updated = dict(history)
    for submit in plan.submits:
        updated[submit.pool] = PoolHistory(now, updated.get(submit.pool, _NO_HISTORY).last_down)
    for release in plan.releases:
        if release.surplus:
            updated[release.pool] = PoolHistory(updated.get(release.pool, _NO_HISTORY).last_up, now)
    return updated


def share(resources: Resources, partition: PartitionLimits) -> float:
    """Nodes a task occupies: its dominant share of a node's cores, memory and GPUs, x nodes."""
    parts = [resources.cpus / max(1, partition.cores_per_node)]
    if resources.memory:
        parts.append(resources.memory / max(1, partition.memory_per_node))
    if resources.gpus:
        parts.append(resources.gpus / max(1, partition.gpus_per_node))
    return min(1.0, max(parts)) * max(1, resources.nodes)


def pool_demand(
    pool: str,
    partition: PartitionLimits,
    queued: Iterable[tuple[Resources, float | None]],
    running: Iterable[Resources] = (),
    *,
    default_estimate_s: float = 600.0,
) -> PoolDemand:
    """Summarise queued ``(resources, estimate)`` and running tasks into a :class:`PoolDemand`.

    The simulator may instead keep the sums up to date itself as tasks come and go.
    """
    count, total, node_s, shortest, longest, widest = 0, 0.0, 0.0, math.inf, 0.0, 0.0
    for resources, estimate in queued:
        s = share(resources, partition)
        e = default_estimate_s if estimate is None else estimate
        count += 1
        total += s
        node_s += s * e
        shortest, longest, widest = min(shortest, e), max(longest, e), max(widest, s)
    running_count, running_total = 0, 0.0
    for resources in running:
        running_count += 1
        running_total += share(resources, partition)
    return PoolDemand(
        pool=pool,
        queued=count,
        queued_share=total,
        queued_node_s=node_s,
        shortest_s=shortest if count else 0.0,
        longest_s=longest,
        widest=widest,
        running=running_count,
        running_share=running_total,
    )


def about_ready(
    parents: Sequence[str],
    state: Mapping[str, str],
    estimate_s: Mapping[str, float | None],
    config: ScaleConfig = _DEFAULT,
) -> bool:
    """Whether a waiting task is about to be ready: every parent has succeeded or is ready
    or running (``state``: ``"done"``, ``"ready"``, ``"running"``; anything else: not yet),
    and each unfinished parent is expected to take at most ``lookahead_s``."""
    for parent in parents:
        s = state.get(parent)
        if s == "done":
            continue
        if s not in ("ready", "running"):
            return False
        estimate = estimate_s.get(parent)
        if estimate is None or estimate > config.lookahead_s:
            return False
    return True


def estimate_nodes(demand: PoolDemand, config: ScaleConfig = _DEFAULT) -> float:
    """Nodes the pool needs now: the running tasks plus the queued work over the horizon
    (``drain_target_s``, or the pool's expected wait when longer)."""
    queued = 0.0
    if demand.queued > 0:
        horizon = max(config.drain_target_s, demand.expected_wait_s)
        by_time = demand.queued_node_s / horizon
        queued = min(demand.queued_share, max(by_time, demand.widest))
    return demand.running_share + queued


def target_allocations(
    demand: PoolDemand,
    pool: PoolShape,
    partition_nodes: int | None = None,
    config: ScaleConfig = _DEFAULT,
) -> int:
    """Allocations the pool should have, within its own bounds and the partition's size."""
    per = max(1, pool.nodes_per_allocation)
    target = math.ceil(estimate_nodes(demand, config) / per - _EPS)
    target = max(target, pool.min_allocations)
    if pool.max_allocations is not None:
        target = min(target, pool.max_allocations)
    if partition_nodes is not None:
        target = min(target, partition_nodes // per)
    return max(0, target)


@dataclass(slots=True)
class _PoolView:
    pool: PoolShape
    demand: PoolDemand
    history: PoolHistory
    allocations: list[Allocation]
    capacity: int = 0
    target: int = 0
    idle_expired: list[Allocation] = field(default_factory=list)
    useless: list[Allocation] = field(default_factory=list)


def decide_scale(
    demand: Mapping[str, PoolDemand],
    allocations: Sequence[Allocation],
    pools: Sequence[PoolShape],
    limits: Mapping[str, SiteLimits],
    *,
    history: Mapping[str, PoolHistory],
    now: float,
    other_jobs: Mapping[str, int] | None = None,
    hold: str | None = None,
    config: ScaleConfig = _DEFAULT,
) -> ScalePlan:
    """Decide submissions and releases for every pool; see the module docstring.

    ``limits`` is keyed by site, ``demand`` and ``history`` by pool name.
    ``other_jobs`` counts, per site, the user's jobs that are not in
    ``allocations`` but count towards MaxSubmitJobs. With ``hold`` set (e.g.
    the run budget is spent), nothing is submitted and ``hold`` is noted.
    """
    held: list[str] = []
    views = _views(
        demand, allocations, pools, limits, history=history, now=now, config=config, held=held
    )
    releases: list[Release] = []
    for view in views:
        releases.extend(_releases(view, now, config, held))
    submits = _submits(
        views,
        allocations,
        limits,
        other_jobs=other_jobs or {},
        now=now,
        hold=hold,
        config=config,
        held=held,
    )
    return ScalePlan(tuple(submits), tuple(releases), tuple(held))


def _views(
    demand: Mapping[str, PoolDemand],
    allocations: Sequence[Allocation],
    pools: Sequence[PoolShape],
    limits: Mapping[str, SiteLimits],
    *,
    history: Mapping[str, PoolHistory],
    now: float,
    config: ScaleConfig,
    held: list[str],
) -> list[_PoolView]:
    by_pool: dict[str, list[Allocation]] = {p.name: [] for p in pools}
    for allocation in allocations:
        by_pool.setdefault(allocation.pool, []).append(allocation)
    views = []
    for pool in pools:
        d = demand.get(pool.name) or PoolDemand(pool.name)
        view = _PoolView(pool, d, history.get(pool.name, _NO_HISTORY), by_pool[pool.name])
        site = limits.get(pool.site)
        part = site.partition(pool.partition) if site else None
        view.target = target_allocations(d, pool, part.nodes if part else None, config)
        wanted = target_allocations(d, pool, None, config)
        if part is not None and wanted > view.target:
            held.append(
                f"pool {pool.name}: demand is {wanted} allocation(s), partition {part.name} "
                f"has {part.nodes} node(s)"
            )
        shortest = d.shortest_s if d.queued else 0.0
        for a in view.allocations:
            left = a.remaining_s(now)
            idle = a.state == "running" and a.idle_since is not None
            if idle and (
                winding_down(left, config.walltime)
                or (d.queued and not fits(shortest, left, config.walltime))
            ):
                view.useless.append(a)  # can take none of the queued work
                continue
            view.capacity += 1
            since = a.idle_since if a.state == "running" else a.submitted_at
            if since is not None and now - since >= config.idle_timeout_s:
                view.idle_expired.append(a)
        views.append(view)
    return views


def _releases(view: _PoolView, now: float, config: ScaleConfig, held: list[str]) -> list[Release]:
    name = view.pool.name
    out = [
        Release(
            a.id,
            name,
            f"idle, and its {format_duration(a.remaining_s(now))} left fit none of the "
            f"{view.demand.queued} queued task(s)",
            surplus=False,
        )
        for a in view.useless
    ]
    keep = max(
        view.target + math.floor(view.target * config.hysteresis + _EPS), view.pool.min_allocations
    )
    surplus = view.capacity - keep
    if surplus <= 0 or not view.idle_expired:
        return out
    last_up = view.history.last_up
    if last_up is not None and now - last_up < config.cooldown_s:
        held.append(
            f"pool {name}: {surplus} allocation(s) surplus, kept for the cool-down "
            f"({config.cooldown_s:.0f}s after the last scale-up)"
        )
        return out
    # pending first (nothing to lose), then the running ones with the least walltime left
    candidates = sorted(
        view.idle_expired, key=lambda a: (a.state == "running", a.remaining_s(now), a.id)
    )
    for a in candidates[:surplus]:
        if a.state == "pending":
            why = f"pending for {now - a.submitted_at:.0f}s and no longer needed"
        else:
            idle_since = now if a.idle_since is None else a.idle_since
            why = f"idle for {now - idle_since:.0f}s"
        out.append(Release(a.id, name, f"{why} (capacity {view.capacity}, target {view.target})"))
    return out


def _submits(
    views: list[_PoolView],
    allocations: Sequence[Allocation],
    limits: Mapping[str, SiteLimits],
    *,
    other_jobs: Mapping[str, int],
    now: float,
    hold: str | None,
    config: ScaleConfig,
    held: list[str],
) -> list[Submit]:
    pools = {v.pool.name: v.pool for v in views}
    site_jobs: dict[str, int] = dict(other_jobs)
    partition_nodes: dict[tuple[str, str], int] = {}
    for a in allocations:
        pool = pools.get(a.pool)
        if pool is None:
            continue
        site_jobs[pool.site] = site_jobs.get(pool.site, 0) + 1
        key = (pool.site, pool.partition)
        partition_nodes[key] = partition_nodes.get(key, 0) + a.nodes

    wanting = []
    for view in views:
        deficit = view.target - view.capacity
        if deficit <= 0:
            continue
        step = max(1, math.ceil(config.hysteresis * view.capacity - _EPS))
        if deficit < step:
            continue
        last_down = view.history.last_down
        if last_down is not None and now - last_down < config.cooldown_s:
            held.append(
                f"pool {view.pool.name}: {deficit} allocation(s) wanted, held for the cool-down "
                f"({config.cooldown_s:.0f}s after the last scale-down)"
            )
            continue
        wanting.append((deficit, view))
    if hold is not None:
        for deficit, view in wanting:
            held.append(f"pool {view.pool.name}: {deficit} allocation(s) wanted, held: {hold}")
        return []

    submits = []
    for deficit, view in sorted(wanting, key=lambda dv: (-dv[0], dv[1].pool.name)):
        pool = view.pool
        per = max(1, pool.nodes_per_allocation)
        site = limits.get(pool.site)
        part = site.partition(pool.partition) if site else None
        d = view.demand
        limit = _walltime_limit(pool, part)
        if d.queued and limit is not None and not fits(d.shortest_s, limit, config.walltime):
            held.append(
                f"pool {pool.name}: {d.queued} queued task(s) of {d.shortest_s:.0f}s or more need "
                f"longer than partition {pool.partition} allows ({format_duration(limit)}): "
                "lower their estimates, split them, or use a partition with a longer limit"
            )
            continue
        count = deficit
        why_capped = ""
        if site is not None and site.max_submit_jobs is not None:
            room = site.max_submit_jobs - site_jobs.get(pool.site, 0)
            if room < count:
                count, why_capped = max(0, room), f"MaxSubmitJobs {site.max_submit_jobs}"
        if part is not None:
            room = (part.nodes - partition_nodes.get((pool.site, pool.partition), 0)) // per
            if room < count:
                count, why_capped = max(0, room), f"partition {part.name}'s {part.nodes} nodes"
        if pool.max_allocations is not None:
            room = pool.max_allocations - len(view.allocations)
            if room < count:
                count, why_capped = max(0, room), f"max_allocations {pool.max_allocations}"
        if why_capped:
            held.append(
                f"pool {pool.name}: {deficit} allocation(s) wanted, {count} submitted "
                f"({why_capped} reached)"
            )
        if count <= 0:
            continue
        site_jobs[pool.site] = site_jobs.get(pool.site, 0) + count
        key = (pool.site, pool.partition)
        partition_nodes[key] = partition_nodes.get(key, 0) + count * per
        walltime = _walltime(view, count, per, limit, config)
        submits.append(
            Submit(
                pool.name,
                count,
                per,
                walltime,
                f"{d.queued} task(s) queued ({d.queued_node_s:.0f} node-s), {d.running} running: "
                f"target {view.target} allocation(s), have {view.capacity}",
            )
        )
    return submits


def _walltime_limit(pool: PoolShape, partition: PartitionLimits | None) -> float | None:
    limits = (pool.max_walltime_s, partition.max_walltime_s if partition else None)
    return min((x for x in limits if x is not None), default=None)


def _walltime(
    view: _PoolView, count: int, per: int, limit: float | None, config: ScaleConfig
) -> float:
    d = view.demand
    if not d.queued:
        return allocation_walltime(
            config.walltime.default_estimate_s, max_walltime_s=limit, config=config.walltime
        )
    nodes = max(1, (view.capacity + count) * per)
    work = d.queued_node_s / nodes + d.longest_s  # list-scheduling bound, per node
    return allocation_walltime(work, max_walltime_s=limit, config=config.walltime)


def decide_simple(
    demand: Mapping[str, PoolDemand],
    allocations: Sequence[Allocation],
    pools: Sequence[PoolShape],
    limits: Mapping[str, SiteLimits],
    *,
    history: Mapping[str, PoolHistory],
    now: float,
    other_jobs: Mapping[str, int] | None = None,
    hold: str | None = None,
    config: ScaleConfig = _DEFAULT,
) -> ScalePlan:
    """Parsl's ``simple`` strategy: ask at once for nodes to run all the queued work, no
    hysteresis and no cool-down; idle allocations still go after ``idle_timeout_s``."""
    at_once = {name: replace(d, expected_wait_s=0.0) for name, d in demand.items()}
    flat = replace(config, hysteresis=0.0, cooldown_s=0.0, drain_target_s=_EPS)
    return decide_scale(
        at_once,
        allocations,
        pools,
        limits,
        history=history,
        now=now,
        other_jobs=other_jobs,
        hold=hold,
        config=flat,
    )


class ScalePolicy(Protocol):
    """The signature every scaling policy shares (that of :func:`decide_scale`)."""

    def __call__(
        self,
        demand: Mapping[str, PoolDemand],
        allocations: Sequence[Allocation],
        pools: Sequence[PoolShape],
        limits: Mapping[str, SiteLimits],
        *,
        history: Mapping[str, PoolHistory],
        now: float,
        other_jobs: Mapping[str, int] | None = None,
        hold: str | None = None,
        config: ScaleConfig = _DEFAULT,
    ) -> ScalePlan: ...


SCALING_POLICIES: Mapping[str, ScalePolicy] = {"demand": decide_scale, "simple": decide_simple}
"""Scaling policies by name (``--scaling``, ``scaling=``, ``HPCORCH_SCALING``), as Parsl's
``Strategy`` names its own: ``demand`` (the default, see the module doc) and ``simple``."""


def scale_policy(name: str) -> ScalePolicy:
    """The scaling policy called ``name``; a ValueError names the valid ones."""
    try:
        return SCALING_POLICIES[name]
    except KeyError:
        valid = ", ".join(sorted(SCALING_POLICIES))
        raise ValueError(f"unknown scaling policy {name!r}; choose one of: {valid}") from None

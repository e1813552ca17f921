"""The state the policies read: small frozen dataclasses the engine and the simulator build.

Plain dataclasses, not pydantic models: the simulator builds them by the
million, and nothing here needs validating twice (the site model validated the
figures at the edge). :func:`site_limits` and :func:`charge_rates` convert the
validated :class:`~hpcorch.sites.model.Site` once, outside any hot loop.

Units: seconds, bytes, and Unix time for instants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from hpcorch.failures import FailureClass, Scope

if TYPE_CHECKING:
    from hpcorch.sites.model import Qos, Site

_N = TypeVar("_N", int, float)

__all__ = [
    "Allocation",
    "AllocationState",
    "Attempt",
    "Budget",
    "ChargeRates",
    "NodeHealth",
    "PartitionLimits",
    "PoolDemand",
    "PoolShape",
    "Resources",
    "SiteLimits",
    "SiteQueue",
    "TaskInfo",
    "charge_rates",
    "parse_budget",
    "site_limits",
]


@dataclass(frozen=True, slots=True)
class Resources:
    """What one attempt asks for: per-node cores, memory and GPUs, on ``nodes`` nodes."""

    cpus: int = 1
    memory: int = 0
    """Bytes per node; 0 means the partition default."""
    gpus: int = 0
    walltime_s: float | None = None
    nodes: int = 1


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task as the retry policy sees it."""

    id: str
    resources: Resources
    retries: int = 0
    """User-error retries the task allows (the workflow's ``retries``)."""
    partition: str | None = None
    estimate_s: float | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One past attempt of a task, as the journal records it."""

    n: int
    resources: Resources
    failure: FailureClass | None = None
    """None for an attempt that succeeded or is still running."""
    node: str | None = None
    start: float | None = None
    end: float | None = None
    memory_peak: int | None = None
    scope: Scope = "task"


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """Node health the monitor saw, and the nodes the strike table struck for everyone."""

    unhealthy: frozenset[str] = frozenset()
    struck: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PartitionLimits:
    name: str
    nodes: int
    cores_per_node: int
    memory_per_node: int
    gpus_per_node: int = 0
    max_walltime_s: float | None = None
    max_nodes_per_job: int | None = None


@dataclass(frozen=True, slots=True)
class SiteLimits:
    site: str
    partitions: tuple[PartitionLimits, ...]
    max_submit_jobs: int | None = None
    """Slurm's MaxSubmitJobs for the user: pending + running jobs, the driver's included."""

    def partition(self, name: str | None) -> PartitionLimits | None:
        """The named partition; with None, the one with the largest nodes (memory, then cores)."""
        if name is None:
            if not self.partitions:
                return None
            return max(self.partitions, key=lambda p: (p.memory_per_node, p.cores_per_node))
        return next((p for p in self.partitions if p.name == name), None)


AllocationState = Literal["pending", "running"]


@dataclass(frozen=True, slots=True)
class Allocation:
    """A live Slurm allocation of a pool (terminal ones are not passed to the policies)."""

    id: str
    pool: str
    state: AllocationState
    submitted_at: float
    walltime_s: float
    nodes: int = 1
    started_at: float | None = None
    idle_since: float | None = None
    """When its workers last became idle; None while any task runs on it."""

    def remaining_s(self, now: float) -> float:
        """Walltime left: the whole walltime while pending."""
        if self.started_at is None:
            return self.walltime_s
        return max(0.0, self.started_at + self.walltime_s - now)


@dataclass(frozen=True, slots=True)
class PoolShape:
    """One pool: allocations of one shape in one partition of one site."""

    name: str
    site: str
    partition: str
    nodes_per_allocation: int = 1
    max_walltime_s: float | None = None
    min_allocations: int = 0
    max_allocations: int | None = None


@dataclass(frozen=True, slots=True)
class PoolDemand:
    """The work a pool has, summarised so that the simulator can keep it up to date in O(1).

    Shares are in nodes: a task using 2 of a node's 8 cores has share 0.25 (its
    dominant share of cores, memory and GPUs); an 8-node MPI task has share 8.
    """

    pool: str
    queued: int = 0
    queued_share: float = 0.0
    """Sum of the queued tasks' shares: nodes needed to run them all at once."""
    queued_node_s: float = 0.0
    """Sum of share * estimate over queued tasks: node-seconds of queued work."""
    shortest_s: float = 0.0
    longest_s: float = 0.0
    widest: float = 0.0
    """Largest single queued task's share (an 8-node MPI task needs 8 nodes at once)."""
    running: int = 0
    running_share: float = 0.0
    expected_wait_s: float = 0.0
    """How long a new allocation of this pool is expected to wait before it starts (observed
    waits): queued work that drains sooner than that is not worth a new allocation."""


@dataclass(frozen=True, slots=True)
class SiteQueue:
    """A site's queue as the region policy sees it, for one kind of request."""

    site: str
    capacity_nodes: int
    idle_nodes: int = 0
    pending_node_s: float = 0.0
    """Node-seconds of work queued ahead (pending jobs' nodes * time limits)."""
    slurm_start_s: float | None = None
    """``squeue --start`` estimate for a job like ours, seconds from now."""
    observed_wait_s: float | None = None
    """Recent waits, exponentially weighted (:func:`hpcorch.policies.region.update_wait`)."""
    speed: float = 1.0
    """Runtime multiplier on this site (1.0: as estimated; 2.0: twice as slow)."""
    cores_per_node: int = 1
    gpus_per_node: int = 0


@dataclass(frozen=True, slots=True)
class ChargeRates:
    """A site's charge rates: service units per node-hour and per GPU-hour, and the SU's price."""

    su_per_node_hour: float = 0.0
    su_per_gpu_hour: float = 0.0
    price_per_su: float | None = None
    currency: str | None = None
    charge_factor: float = 1.0
    """QOS multiplier on the SU rates."""


@dataclass(frozen=True, slots=True)
class Budget:
    """A run's budget: ``amount`` in ``unit``, which is ``"SU"`` or a currency code."""

    amount: float
    unit: str = "SU"


_BUDGET = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]{2,3})?\s*")


def parse_budget(text: str) -> Budget:
    """``"12.5"`` or ``"12.5 SU"`` (service units) or ``"300 EUR"`` (a currency)."""
    found = _BUDGET.fullmatch(text)
    if not found:
        raise ValueError(f"budget {text!r}: give an amount and a unit, e.g. '100 SU' or '50 EUR'")
    unit = (found.group(2) or "SU").upper()
    return Budget(float(found.group(1)), "SU" if unit == "SU" else unit)


def site_limits(site: Site, qos: str | None = None) -> SiteLimits:
    """Limits of a validated site model, with the QOS's limits applied where tighter."""
    chosen = _qos(site, qos)
    max_submit = _tightest(site.limits.max_submit_jobs, chosen.max_submit_jobs if chosen else None)
    site_wall = _tightest(site.limits.max_walltime_s, chosen.max_walltime_s if chosen else None)
    site_nodes = _tightest(
        site.limits.max_nodes_per_job, chosen.max_nodes_per_job if chosen else None
    )
    partitions = tuple(
        PartitionLimits(
            name=p.name,
            nodes=p.nodes,
            cores_per_node=p.node.cores,
            memory_per_node=p.node.memory,
            gpus_per_node=p.node.gpus,
            max_walltime_s=_tightest(p.max_walltime_s, site_wall),
            max_nodes_per_job=_tightest(p.max_nodes_per_job, site_nodes),
        )
        for p in site.partitions
    )
    return SiteLimits(site=site.name, partitions=partitions, max_submit_jobs=max_submit)


def charge_rates(site: Site, partition: str | None = None, qos: str | None = None) -> ChargeRates:
    """Charge rates of a partition (its own, else the site's), with the QOS's factor."""
    charge = site.partition(partition).charge or site.charge
    chosen = _qos(site, qos)
    return ChargeRates(
        su_per_node_hour=charge.su_per_node_hour or 0.0,
        su_per_gpu_hour=charge.su_per_gpu_hour or 0.0,
        price_per_su=charge.price_per_su,
        currency=charge.currency,
        charge_factor=chosen.charge_factor if chosen else 1.0,
    )


def _qos(site: Site, name: str | None) -> Qos | None:
    if name is None:
        return next((q for q in site.qos if q.default), None)
    for q in site.qos:
        if q.name == name:
            return q
    raise KeyError(f"site {site.name!r} has no QOS {name!r}; it has {[q.name for q in site.qos]}")


def _tightest(*values: _N | None) -> _N | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None

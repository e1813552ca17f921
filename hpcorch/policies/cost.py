"""Cost: charges, accounting of core- and GPU-hours, and the run budget.

Sites charge allocations, not tasks: an allocation of ``n`` nodes costs
``hours x (n x su_per_node_hour + gpus x su_per_gpu_hour) x charge_factor``
service units (SU) from its start to its end, whether its workers were busy or
not; ``price_per_su`` turns SU into a currency. :func:`account` sums, per site
and for the run, the core-hours and GPU-hours allocated, used by attempts
(clipped to their allocation) and idle (allocated - used), with the SU and the
cost. :func:`committed` is what live allocations may still charge until their
walltime; :func:`budget_status` compares spent + committed with the run's
:class:`~hpcorch.policies.state.Budget` (in ``"SU"`` or a currency) and, once
it is reached, says so with the figures and how to raise it.

All pure functions over records: the engine builds the records from the
journal, the simulator from its event log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hpcorch.errors import SiteConfigError
from hpcorch.policies.state import Budget, ChargeRates

__all__ = [
    "Accounts",
    "AllocationRecord",
    "AttemptRecord",
    "BudgetStatus",
    "Usage",
    "account",
    "amount_in",
    "budget_status",
    "charge",
    "committed",
]

_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class AllocationRecord:
    """One Slurm allocation's life, as the journal records it."""

    id: str
    site: str
    nodes: int
    cores_per_node: int
    gpus_per_node: int = 0
    rates: ChargeRates = field(default_factory=ChargeRates)
    submitted_at: float = 0.0
    start: float | None = None
    """None while pending (or if it never started): nothing charged."""
    end: float | None = None
    """None while running: charged up to ``now``."""
    walltime_s: float | None = None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One task attempt's use of cores and GPUs (all its nodes together)."""

    site: str
    start: float
    end: float | None
    cores: int
    gpus: int = 0
    allocation: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    node_hours: float = 0.0
    core_hours_allocated: float = 0.0
    core_hours_used: float = 0.0
    gpu_hours_allocated: float = 0.0
    gpu_hours_used: float = 0.0
    su: float = 0.0
    cost: float | None = 0.0
    """In ``currency``; None when some SU have no known price or currencies are mixed."""
    currency: str | None = None

    @property
    def core_hours_idle(self) -> float:
        return max(0.0, self.core_hours_allocated - self.core_hours_used)

    @property
    def gpu_hours_idle(self) -> float:
        return max(0.0, self.gpu_hours_allocated - self.gpu_hours_used)

    def __add__(self, other: Usage) -> Usage:
        cost, currency = _add_cost(self, other)
        return Usage(
            self.node_hours + other.node_hours,
            self.core_hours_allocated + other.core_hours_allocated,
            self.core_hours_used + other.core_hours_used,
            self.gpu_hours_allocated + other.gpu_hours_allocated,
            self.gpu_hours_used + other.gpu_hours_used,
            self.su + other.su,
            cost,
            currency,
        )

    def as_dict(self) -> dict[str, float | str | None]:
        """Flat figures for the journal and ``status --json``."""
        return {
            "node_hours": self.node_hours,
            "core_hours_allocated": self.core_hours_allocated,
            "core_hours_used": self.core_hours_used,
            "core_hours_idle": self.core_hours_idle,
            "gpu_hours_allocated": self.gpu_hours_allocated,
            "gpu_hours_used": self.gpu_hours_used,
            "gpu_hours_idle": self.gpu_hours_idle,
            "su": self.su,
            "cost": self.cost,
            "currency": self.currency,
        }


def _add_cost(a: Usage, b: Usage) -> tuple[float | None, str | None]:
    # usage that charged nothing costs nothing in any currency
    if a.su == 0 and a.cost == 0:
        return b.cost, b.currency
    if b.su == 0 and b.cost == 0:
        return a.cost, a.currency
    if a.cost is None or b.cost is None or a.currency != b.currency:
        return None, None
    return a.cost + b.cost, a.currency


@dataclass(frozen=True, slots=True)
class Accounts:
    per_site: Mapping[str, Usage]
    total: Usage


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    open: bool
    """False once spent + committed reach the budget: submit no new work."""
    spent: float
    committed: float
    remaining: float
    unit: str
    message: str


def charge(rates: ChargeRates, hours: float, nodes: float, gpus: float = 0.0) -> Usage:
    """SU and cost of ``nodes`` nodes (a fraction for a shared node) and ``gpus`` GPUs for hours."""
    su = hours * (nodes * rates.su_per_node_hour + gpus * rates.su_per_gpu_hour)
    su *= rates.charge_factor
    if su == 0:
        return Usage()
    if rates.price_per_su is None:
        return Usage(su=su, cost=None)
    return Usage(su=su, cost=su * rates.price_per_su, currency=rates.currency)


def account(
    allocations: Iterable[AllocationRecord], attempts: Iterable[AttemptRecord], now: float
) -> Accounts:
    """Core/GPU-hours allocated, used and idle, SU and cost, per site and for the run."""
    by_id = {a.id: a for a in allocations}
    used: dict[str, list[float]] = {a: [0.0, 0.0] for a in by_id}
    loose: dict[str, Usage] = {}
    for attempt in attempts:
        start, end = attempt.start, now if attempt.end is None else attempt.end
        alloc = by_id.get(attempt.allocation) if attempt.allocation else None
        if alloc is not None:
            if alloc.start is None:
                continue
            start = max(start, alloc.start)
            end = min(end, now if alloc.end is None else alloc.end)
        hours = max(0.0, end - start) / _HOUR
        if alloc is not None:
            used[alloc.id][0] += attempt.cores * hours
            used[alloc.id][1] += attempt.gpus * hours
        else:  # no allocation known (the local site): used, never allocated
            extra = Usage(
                core_hours_used=attempt.cores * hours, gpu_hours_used=attempt.gpus * hours
            )
            loose[attempt.site] = loose.get(attempt.site, Usage()) + extra

    per_site: dict[str, Usage] = dict(loose)
    for alloc in by_id.values():
        if alloc.start is None:
            continue
        end = now if alloc.end is None else alloc.end
        hours = max(0.0, end - alloc.start) / _HOUR
        cores = alloc.nodes * alloc.cores_per_node * hours
        gpus = alloc.nodes * alloc.gpus_per_node * hours
        cost = charge(alloc.rates, hours, alloc.nodes, alloc.nodes * alloc.gpus_per_node)
        usage = Usage(
            node_hours=alloc.nodes * hours,
            core_hours_allocated=cores,
            core_hours_used=min(cores, used[alloc.id][0]),
            gpu_hours_allocated=gpus,
            gpu_hours_used=min(gpus, used[alloc.id][1]),
            su=cost.su,
            cost=cost.cost,
            currency=cost.currency,
        )
        per_site[alloc.site] = per_site.get(alloc.site, Usage()) + usage
    total = Usage()
    for usage in per_site.values():
        total = total + usage
    return Accounts(per_site, total)


def committed(allocations: Iterable[AllocationRecord], now: float) -> Usage:
    """What live allocations may still charge: pending ones their walltime, running ones the rest.

    An allocation with no walltime known commits nothing beyond what it spent.
    """
    total = Usage()
    for alloc in allocations:
        if alloc.end is not None or alloc.walltime_s is None:
            continue
        left = alloc.walltime_s
        if alloc.start is not None:
            left = max(0.0, alloc.start + alloc.walltime_s - now)
        hours = left / _HOUR
        total = total + charge(alloc.rates, hours, alloc.nodes, alloc.nodes * alloc.gpus_per_node)
    return total


def amount_in(usage: Usage, unit: str) -> float:
    """The usage in a budget's unit: its SU for ``"SU"``, else its cost in that currency."""
    if unit.upper() == "SU":
        return usage.su
    if usage.su == 0:
        return 0.0
    if usage.cost is None or usage.currency != unit:
        what = f"in {usage.currency}" if usage.currency else "unpriced or in mixed currencies"
        raise SiteConfigError(
            f"cannot account a budget in {unit}: the sites' charges are {what}; "
            f"give every site charge.price_per_su and charge.currency: {unit}, "
            "or set the budget in SU"
        )
    return usage.cost


def budget_status(budget: Budget, spent: Usage, commitment: Usage) -> BudgetStatus:
    """Whether the run may start new work: spent + committed must stay below the budget.

    ``spent`` is :attr:`Accounts.total`, ``commitment`` is :func:`committed` of the live
    allocations.
    """
    unit = budget.unit
    s, c = amount_in(spent, unit), amount_in(commitment, unit)
    remaining = budget.amount - s - c
    if remaining > 0:
        message = (
            f"budget: {s:,.2f} {unit} spent, {c:,.2f} {unit} committed, "
            f"{remaining:,.2f} {unit} left of {budget.amount:,.2f} {unit}"
        )
        return BudgetStatus(True, s, c, remaining, unit, message)
    message = (
        f"run budget spent: {s:,.2f} {unit} spent and {c:,.2f} {unit} committed to running "
        f"allocations reach the budget of {budget.amount:,.2f} {unit}; no new work is submitted. "
        "To go on, raise the run's budget and resume it (`hpcorch resume RUN`)"
    )
    return BudgetStatus(False, s, c, remaining, unit, message)

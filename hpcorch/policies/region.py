"""Regions: send work to the site where it finishes first at acceptable cost.

Expected start (:func:`expected_start_s`), per site, from its queue now:

- 0 when the site has enough idle nodes for the request; else Slurm's own
  ``squeue --start`` estimate when it gives one; else the work queued ahead
  spread over the partition (``pending_node_s / capacity_nodes``);
- blended with the waits observed recently at that site (an exponentially
  weighted average, :func:`update_wait`):
  ``(1 - history_weight) x now_estimate + history_weight x observed``.

Expected finish = start + runtime x the site's ``speed``. Cost = the charge of
the task's share of a node (or its nodes) for that runtime
(:func:`hpcorch.policies.cost.charge`), in the budget's unit.

The choice (:func:`choose_site`), among the sites that can run the task:

1. with a budget, once spent + committed reach it: no site, and the message
   says the budget is spent (figures, unit, how to raise it); sites whose cost
   for this task exceeds what is left are dropped;
2. by default, the *cheapest among the sites that finish within
   ``finish_tolerance`` (relative) or ``finish_slack_s`` (absolute) of the
   earliest finish*, ties to the earlier finish;
3. with ``cost_weight_s`` set, the site minimising
   ``finish_s + cost_weight_s x cost`` (seconds one unit of cost is worth).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hpcorch.policies.cost import Usage, amount_in, budget_status, charge
from hpcorch.policies.state import Budget, ChargeRates, Resources, SiteQueue

__all__ = [
    "RegionConfig",
    "RegionDecision",
    "SiteEstimate",
    "choose_site",
    "expected_start_s",
    "task_cost",
    "update_wait",
]

_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class RegionConfig:
    history_weight: float = 0.3
    wait_alpha: float = 0.3
    """Weight of the newest observation in :func:`update_wait`."""
    finish_tolerance: float = 0.10
    finish_slack_s: float = 60.0
    cost_weight_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.history_weight <= 1 or not 0 < self.wait_alpha <= 1:
            raise ValueError("history_weight must be in [0, 1] and wait_alpha in (0, 1]")
        if self.finish_tolerance < 0 or self.finish_slack_s < 0:
            raise ValueError("finish_tolerance and finish_slack_s must not be negative")


@dataclass(frozen=True, slots=True)
class SiteEstimate:
    site: str
    start_s: float
    """Seconds from now."""
    finish_s: float
    cost: float
    """In the budget's unit (SU without a budget)."""


@dataclass(frozen=True, slots=True)
class RegionDecision:
    site: str | None
    """None: submit no new work (budget spent, or no site can run it)."""
    reason: str
    estimates: tuple[SiteEstimate, ...] = ()


_DEFAULT = RegionConfig()


def update_wait(
    previous_s: float | None, observed_s: float, config: RegionConfig = _DEFAULT
) -> float:
    """Exponentially weighted queue wait after observing one more allocation's wait."""
    if previous_s is None:
        return observed_s
    return config.wait_alpha * observed_s + (1 - config.wait_alpha) * previous_s


def expected_start_s(
    queue: SiteQueue, nodes: float = 1.0, config: RegionConfig = _DEFAULT
) -> float:
    """Seconds until a request for ``nodes`` nodes is expected to start at this site."""
    if queue.idle_nodes >= nodes:
        now = 0.0
    elif queue.slurm_start_s is not None:
        now = max(0.0, queue.slurm_start_s)
    else:
        now = queue.pending_node_s / max(1, queue.capacity_nodes)
    if queue.observed_wait_s is None:
        return now
    return (1 - config.history_weight) * now + config.history_weight * queue.observed_wait_s


def _nodes(resources: Resources, queue: SiteQueue) -> float:
    """Nodes the task occupies at this site: whole nodes, or its share of one."""
    per_node = resources.cpus / max(1, queue.cores_per_node)
    if resources.gpus:
        per_node = max(per_node, resources.gpus / max(1, queue.gpus_per_node))
    return min(1.0, per_node) * max(1, resources.nodes)


def task_cost(
    resources: Resources, runtime_s: float, queue: SiteQueue, rates: ChargeRates, unit: str = "SU"
) -> float:
    """What running the task at this site is expected to cost, in ``unit``."""
    hours = runtime_s * queue.speed / _HOUR
    usage = charge(rates, hours, _nodes(resources, queue), resources.gpus * max(1, resources.nodes))
    return amount_in(usage, unit)


def choose_site(
    resources: Resources,
    runtime_s: float,
    queues: Sequence[SiteQueue],
    rates: Mapping[str, ChargeRates],
    *,
    budget: Budget | None = None,
    spent: Usage | None = None,
    commitment: Usage | None = None,
    config: RegionConfig = _DEFAULT,
) -> RegionDecision:
    """Pick the site for one ready task; ``queues`` lists only sites that can run it.

    ``spent`` and ``commitment`` are the run's accounted usage and what its live
    allocations may still charge (:mod:`hpcorch.policies.cost`).
    """
    unit = budget.unit if budget else "SU"
    left: float | None = None
    if budget is not None:
        status = budget_status(budget, spent or Usage(), commitment or Usage())
        if not status.open:
            return RegionDecision(None, status.message)
        left = status.remaining
    estimates = []
    for queue in queues:
        nodes = _nodes(resources, queue)
        start = expected_start_s(queue, nodes, config)
        cost = task_cost(resources, runtime_s, queue, rates.get(queue.site, ChargeRates()), unit)
        estimates.append(SiteEstimate(queue.site, start, start + runtime_s * queue.speed, cost))
    if not estimates:
        return RegionDecision(None, "no site can run this task: check its resources")
    affordable = [e for e in estimates if left is None or e.cost <= left]
    if not affordable:
        cheapest = min(estimates, key=lambda e: e.cost)
        return RegionDecision(
            None,
            f"the run budget has {left:,.2f} {unit} left, and this task is expected to cost "
            f"{cheapest.cost:,.2f} {unit} at the cheapest site ({cheapest.site}): raise the "
            "run's budget and resume it (`hpcorch resume RUN`)",
            tuple(estimates),
        )
    if config.cost_weight_s is not None:
        weight = config.cost_weight_s
        best = min(affordable, key=lambda e: (e.finish_s + weight * e.cost, e.site))
        why = f"lowest finish + {weight:g} s/{unit} x cost"
    else:
        earliest = min(e.finish_s for e in affordable)
        bound = max(earliest * (1 + config.finish_tolerance), earliest + config.finish_slack_s)
        close = [e for e in affordable if e.finish_s <= bound]
        best = min(close, key=lambda e: (e.cost, e.finish_s, e.site))
        why = (
            f"cheapest of {len(close)} site(s) finishing within "
            f"{config.finish_tolerance:.0%} or {config.finish_slack_s:.0f}s of the earliest"
        )
    reason = (
        f"{best.site}: expected start in {best.start_s:.0f}s, finish in {best.finish_s:.0f}s, "
        f"cost {best.cost:,.2f} {unit} ({why})"
    )
    return RegionDecision(best.site, reason, tuple(estimates))

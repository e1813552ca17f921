"""Stand-in scaling and region policies, used only until hpcorch.policies provides them.

These are deliberately simple and named ``default_*`` so that nobody mistakes
them for the real policies. They take the same state objects
(:mod:`hpcorch.policies.state`) the real ones will, so swapping them in is a
one-line change in :mod:`hpcorch.sim.hooks`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hpcorch.policies.state import Allocation, PoolDemand, PoolShape, SiteQueue

__all__ = ["DefaultScaleDecision", "default_choose_site", "default_scale"]


@dataclass(frozen=True, slots=True)
class DefaultScaleDecision:
    submit: int = 0
    cancel: tuple[str, ...] = ()
    reason: str = ""


def default_scale(
    pool: PoolShape,
    demand: PoolDemand,
    allocations: Sequence[Allocation],
    now: float,
    *,
    free_share: float = 0.0,
    idle_timeout_s: float = 300.0,
) -> DefaultScaleDecision:
    """Ask for enough nodes to run the queued work at once; release allocations idle too long
    (down to ``pool.min_allocations``).

    ``free_share`` is the idle capacity (in nodes) of the running allocations.
    """
    pending_nodes = sum(a.nodes for a in allocations if a.state == "pending")
    missing = demand.queued_share - free_share - pending_nodes
    live = len(allocations)
    room = (pool.max_allocations - live) if pool.max_allocations is not None else math.inf
    submit = 0
    if missing > 0 and room > 0:
        submit = int(min(room, math.ceil(missing / pool.nodes_per_allocation)))
    # Idle this long with work queued means the queued work cannot use it (too little
    # time left, wrong shape): release it either way.
    idle = [
        a.id
        for a in allocations
        if a.state == "running"
        and a.idle_since is not None
        and now - a.idle_since >= idle_timeout_s
    ]
    cancel = tuple(idle[: max(0, live - pool.min_allocations)])
    return DefaultScaleDecision(
        submit, cancel, f"queued share {demand.queued_share:.1f} nodes, missing {missing:.1f}"
    )


def default_choose_site(queues: Sequence[SiteQueue], nodes: int) -> str:
    """The site where a ``nodes``-node job is expected to start soonest."""

    def expected_wait(q: SiteQueue) -> float:
        if q.slurm_start_s is not None:
            return q.slurm_start_s
        if q.idle_nodes >= nodes:
            return 0.0
        return q.pending_node_s / max(1, q.capacity_nodes)

    return min(queues, key=expected_wait).site

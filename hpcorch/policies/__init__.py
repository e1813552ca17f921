"""Policies: pure functions from state to decisions.

The live engine and the trace-driven simulator call the same code; only the
clock and the cluster differ. Inputs are the small frozen dataclasses of
:mod:`~hpcorch.policies.state` (plain dataclasses, cheap to build by the
million); each policy returns its own frozen decision with a reason string for
the journal. Nothing here does I/O, reads a clock or keeps state between calls.

- :mod:`~hpcorch.policies.retry`: the remedy after a failed attempt, per
  failure class (:mod:`hpcorch.failures` classifies), and the node-strike table.
- :mod:`~hpcorch.policies.scale`: how many allocations each pool should have.
- :mod:`~hpcorch.policies.walltime`: how long to ask for; which worker may take
  which task.
- :mod:`~hpcorch.policies.region`: which site a task goes to, by expected
  finish and cost, under the run budget.
- :mod:`~hpcorch.policies.cost`: charges, accounting and the budget.
"""

from hpcorch.policies.cost import account, budget_status, committed
from hpcorch.policies.region import choose_site, expected_start_s, update_wait
from hpcorch.policies.retry import decide_retry, struck_nodes
from hpcorch.policies.scale import decide_scale, pool_demand, record
from hpcorch.policies.walltime import allocation_walltime, fits, winding_down

__all__ = [
    "account",
    "allocation_walltime",
    "budget_status",
    "choose_site",
    "committed",
    "decide_retry",
    "decide_scale",
    "expected_start_s",
    "fits",
    "pool_demand",
    "record",
    "struck_nodes",
    "update_wait",
    "winding_down",
]

"""Charges, accounting and the run budget (hpcorch.policies.cost)."""

from __future__ import annotations

import pytest

from hpcorch.errors import SiteConfigError
from hpcorch.policies.cost import (
    AllocationRecord,
    AttemptRecord,
    Usage,
    account,
    amount_in,
    budget_status,
    charge,
    committed,
)
from hpcorch.policies.state import Budget, ChargeRates

H = 3600.0
CPU_RATES = ChargeRates(su_per_node_hour=1.0, price_per_su=0.5, currency="EUR")
GPU_RATES = ChargeRates(su_per_node_hour=2.0, su_per_gpu_hour=4.0, price_per_su=0.5, currency="EUR")


def test_charge() -> None:
    assert charge(CPU_RATES, hours=2, nodes=3) == Usage(su=6.0, cost=3.0, currency="EUR")
    assert charge(GPU_RATES, hours=1, nodes=1, gpus=4).su == 18.0
    assert charge(ChargeRates(su_per_node_hour=1.0, charge_factor=2.0), 1, 1) == Usage(
        su=2.0, cost=None
    )
    assert charge(ChargeRates(), 10, 10) == Usage()


def test_account_allocated_used_idle_and_cost_per_site() -> None:
    allocations = [
        AllocationRecord("1", "a", nodes=2, cores_per_node=8, rates=CPU_RATES, start=0.0, end=H),
        AllocationRecord(
            "2",
            "b",
            nodes=1,
            cores_per_node=8,
            gpus_per_node=4,
            rates=GPU_RATES,
            start=0.0,
            end=None,
        ),
        AllocationRecord("3", "a", nodes=1, cores_per_node=8, rates=CPU_RATES),  # never started
    ]
    attempts = [
        AttemptRecord("a", 0.0, H / 2, cores=8, allocation="1"),
        AttemptRecord("a", H / 2, 2 * H, cores=4, allocation="1"),  # clipped at the end
        AttemptRecord("b", -100.0, None, cores=2, gpus=2, allocation="2"),  # clipped at start
        AttemptRecord("local", 0.0, H, cores=2),  # no allocation: used only
    ]
    accounts = account(allocations, attempts, now=2 * H)
    a, b, local = accounts.per_site["a"], accounts.per_site["b"], accounts.per_site["local"]
    assert a.core_hours_allocated == 16.0
    assert a.core_hours_used == 4.0 + 2.0
    assert a.core_hours_idle == 10.0
    assert (a.su, a.cost, a.currency) == (2.0, 1.0, "EUR")
    assert b.gpu_hours_allocated == 8.0 and b.gpu_hours_used == 4.0 and b.gpu_hours_idle == 4.0
    assert b.su == 2 * (2.0 + 4 * 4.0)
    assert local.core_hours_used == 2.0 and local.core_hours_allocated == 0.0 and local.su == 0
    total = accounts.total
    assert total.su == a.su + b.su and total.cost == a.cost + (b.cost or 0)
    assert total.core_hours_allocated == 32.0
    assert total.as_dict()["core_hours_idle"] == 32.0 - (6.0 + 4.0 + 2.0)


def test_used_never_exceeds_allocated() -> None:
    allocations = [AllocationRecord("1", "a", 1, 8, rates=CPU_RATES, start=0.0, end=H)]
    attempts = [AttemptRecord("a", 0.0, H, cores=8, allocation="1")] * 3
    usage = account(allocations, attempts, now=H).total
    assert usage.core_hours_used == 8.0 and usage.core_hours_idle == 0.0


def test_mixed_or_unknown_prices_make_cost_unknown() -> None:
    usd = ChargeRates(su_per_node_hour=1.0, price_per_su=1.0, currency="USD")
    unpriced = ChargeRates(su_per_node_hour=1.0)
    assert (charge(CPU_RATES, 1, 1) + charge(usd, 1, 1)).cost is None
    assert (charge(CPU_RATES, 1, 1) + charge(unpriced, 1, 1)).cost is None
    assert (charge(CPU_RATES, 1, 1) + Usage(core_hours_used=3)).cost == 0.5


def test_committed_counts_what_live_allocations_may_still_charge() -> None:
    allocations = [
        AllocationRecord("p", "a", 1, 8, rates=CPU_RATES, walltime_s=2 * H),  # pending: 2 h
        AllocationRecord("r", "a", 2, 8, rates=CPU_RATES, start=0.0, walltime_s=2 * H),  # 1 h
        AllocationRecord("e", "a", 4, 8, rates=CPU_RATES, start=0.0, end=H, walltime_s=2 * H),
        AllocationRecord("u", "a", 4, 8, rates=CPU_RATES, start=0.0),  # no walltime known
    ]
    assert committed(allocations, now=H).su == 2.0 + 2.0


def test_amount_in_units() -> None:
    usage = Usage(su=10.0, cost=5.0, currency="EUR")
    assert amount_in(usage, "SU") == 10.0
    assert amount_in(usage, "EUR") == 5.0
    assert amount_in(Usage(), "USD") == 0.0
    with pytest.raises(SiteConfigError, match="price_per_su"):
        amount_in(usage, "USD")
    with pytest.raises(SiteConfigError, match="unpriced"):
        amount_in(Usage(su=1.0, cost=None), "USD")


def test_budget_open_then_spent_with_a_message() -> None:
    budget = Budget(100.0, "SU")
    ok = budget_status(budget, Usage(su=60.0), Usage(su=30.0))
    assert ok.open and ok.remaining == 10.0 and "10.00 SU left" in ok.message
    spent = budget_status(budget, Usage(su=80.0), Usage(su=20.0))
    assert not spent.open
    assert "run budget spent" in spent.message
    assert "80.00 SU" in spent.message and "100.00 SU" in spent.message
    assert "raise the run's budget" in spent.message and "hpcorch resume" in spent.message


def test_budget_in_currency() -> None:
    status = budget_status(Budget(10.0, "EUR"), charge(CPU_RATES, 10, 2), Usage())
    assert not status.open and status.spent == 10.0 and "EUR" in status.message

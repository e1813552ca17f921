"""Site choice by expected finish and cost, under a budget (hpcorch.policies.region)."""

from __future__ import annotations

import pytest

from hpcorch.policies.cost import Usage
from hpcorch.policies.region import (
    RegionConfig,
    choose_site,
    expected_start_s,
    task_cost,
    update_wait,
)
from hpcorch.policies.state import Budget, ChargeRates, Resources, SiteQueue

CHEAP = ChargeRates(su_per_node_hour=1.0)
DEAR = ChargeRates(su_per_node_hour=3.0)
RATES = {"cheap": CHEAP, "dear": DEAR}
TASK = Resources(cpus=8)


def queue(site: str, **kw: object) -> SiteQueue:
    return SiteQueue(site, capacity_nodes=kw.pop("capacity_nodes", 4), cores_per_node=8, **kw)  # type: ignore[arg-type]


def test_expected_start_sources() -> None:
    assert expected_start_s(queue("a", idle_nodes=2), nodes=2) == 0.0
    assert expected_start_s(queue("a", idle_nodes=1, slurm_start_s=300.0), nodes=2) == 300.0
    assert expected_start_s(queue("a", pending_node_s=4000.0)) == 1000.0
    blended = expected_start_s(queue("a", slurm_start_s=100.0, observed_wait_s=1100.0))
    assert blended == pytest.approx(0.7 * 100 + 0.3 * 1100)


def test_update_wait_is_an_exponential_average() -> None:
    assert update_wait(None, 100.0) == 100.0
    assert update_wait(100.0, 200.0) == pytest.approx(130.0)
    wait: float | None = None
    for _ in range(50):
        wait = update_wait(wait, 60.0)
    assert wait == pytest.approx(60.0)


def test_task_cost_uses_the_share_of_a_node() -> None:
    q = queue("a")
    assert task_cost(Resources(cpus=2), 3600.0, q, CHEAP) == 0.25
    assert task_cost(Resources(cpus=8, nodes=4), 1800.0, q, CHEAP) == 2.0
    gpu = SiteQueue("g", 2, cores_per_node=8, gpus_per_node=4)
    rates = ChargeRates(su_per_node_hour=1.0, su_per_gpu_hour=2.0)
    assert task_cost(Resources(cpus=1, gpus=2), 3600.0, gpu, rates) == 0.5 + 4.0
    assert task_cost(Resources(), 3600.0, queue("a", speed=2.0), CHEAP) == 0.25


def test_both_idle_goes_to_the_cheaper_site() -> None:
    decision = choose_site(
        TASK, 600.0, [queue("dear", idle_nodes=4), queue("cheap", idle_nodes=4)], RATES
    )
    assert decision.site == "cheap"
    assert "cost" in decision.reason and len(decision.estimates) == 2


def test_busy_cheap_site_loses_to_the_idle_dear_one() -> None:
    busy = queue("cheap", slurm_start_s=3600.0)
    decision = choose_site(TASK, 600.0, [busy, queue("dear", idle_nodes=4)], RATES)
    assert decision.site == "dear"


def test_small_delay_is_worth_the_saving() -> None:
    # cheap starts 30 s later: within the 60 s slack, so the saving wins
    decision = choose_site(
        TASK, 600.0, [queue("cheap", slurm_start_s=30.0), queue("dear", idle_nodes=4)], RATES
    )
    assert decision.site == "cheap"
    strict = RegionConfig(finish_tolerance=0.0, finish_slack_s=0.0)
    decision = choose_site(
        TASK,
        600.0,
        [queue("cheap", slurm_start_s=30.0), queue("dear", idle_nodes=4)],
        RATES,
        config=strict,
    )
    assert decision.site == "dear"


def test_weighted_mode() -> None:
    queues = [queue("cheap", slurm_start_s=600.0), queue("dear", idle_nodes=4)]
    # dear costs 0.5 SU more for 600 s sooner: worth it at 100 s/SU, not at 10000 s/SU
    assert (
        choose_site(TASK, 600.0, queues, RATES, config=RegionConfig(cost_weight_s=100.0)).site
        == "dear"
    )
    assert (
        choose_site(TASK, 600.0, queues, RATES, config=RegionConfig(cost_weight_s=10000.0)).site
        == "cheap"
    )


def test_slow_site_finishes_later() -> None:
    decision = choose_site(
        TASK, 3600.0, [queue("cheap", idle_nodes=4, speed=3.0), queue("dear", idle_nodes=4)], RATES
    )
    assert decision.site == "dear"


def test_budget_spent_means_no_new_work() -> None:
    decision = choose_site(
        TASK,
        600.0,
        [queue("cheap", idle_nodes=4)],
        RATES,
        budget=Budget(10.0),
        spent=Usage(su=8.0),
        commitment=Usage(su=2.0),
    )
    assert decision.site is None
    assert "run budget spent" in decision.reason and "10.00 SU" in decision.reason


def test_budget_drops_sites_the_rest_cannot_pay_for() -> None:
    queues = [queue("cheap", slurm_start_s=3600.0), queue("dear", idle_nodes=4)]
    decision = choose_site(TASK, 3600.0, queues, RATES, budget=Budget(10.0), spent=Usage(su=8.0))
    assert decision.site == "cheap"  # dear would cost 3 SU, 2 are left
    decision = choose_site(
        TASK, 3 * 3600.0, queues, RATES, budget=Budget(10.0), spent=Usage(su=8.0)
    )
    assert decision.site is None and "cheapest site (cheap)" in decision.reason


def test_no_site() -> None:
    decision = choose_site(TASK, 60.0, [], RATES)
    assert decision.site is None and "no site" in decision.reason


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="history_weight"):
        RegionConfig(history_weight=2.0)
    with pytest.raises(ValueError, match="negative"):
        RegionConfig(finish_slack_s=-1)

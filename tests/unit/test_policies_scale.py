"""Autoscaling decisions (hpcorch.policies.scale): demand, limits, hysteresis, cool-down, idle."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hpcorch.policies.scale import (
    PoolHistory,
    ScaleConfig,
    ScalePlan,
    about_ready,
    decide_scale,
    estimate_nodes,
    pool_demand,
    record,
    share,
    target_allocations,
)
from hpcorch.policies.state import (
    Allocation,
    PartitionLimits,
    PoolDemand,
    PoolShape,
    Resources,
    SiteLimits,
)

GIB = 1024**3
CPU = PartitionLimits(
    "cpu", nodes=4, cores_per_node=8, memory_per_node=8 * GIB, max_walltime_s=4 * 3600
)
GPU = PartitionLimits(
    "gpu", nodes=2, cores_per_node=8, memory_per_node=8 * GIB, gpus_per_node=4, max_walltime_s=3600
)
LIMITS = {"dev": SiteLimits("dev", (CPU, GPU), max_submit_jobs=10)}
POOLS = [PoolShape("cpu", "dev", "cpu"), PoolShape("gpu", "dev", "gpu")]
CONFIG = ScaleConfig(idle_timeout_s=60, cooldown_s=30, hysteresis=0.1, drain_target_s=60)


def demand(
    pool: str = "cpu",
    queued: int = 0,
    share_each: float = 0.125,
    estimate: float = 60.0,
    running: int = 0,
) -> PoolDemand:
    return PoolDemand(
        pool=pool,
        queued=queued,
        queued_share=queued * share_each,
        queued_node_s=queued * share_each * estimate,
        shortest_s=estimate if queued else 0.0,
        longest_s=estimate if queued else 0.0,
        widest=share_each if queued else 0.0,
        running=running,
        running_share=running * share_each,
    )


def alloc(
    i: int,
    pool: str = "cpu",
    state: str = "running",
    *,
    submitted: float = 0.0,
    started: float | None = 0.0,
    idle_since: float | None = None,
    walltime: float = 3600.0,
    nodes: int = 1,
) -> Allocation:
    return Allocation(
        id=str(i),
        pool=pool,
        state=state,
        submitted_at=submitted,  # type: ignore[arg-type]
        walltime_s=walltime,
        nodes=nodes,
        started_at=started if state == "running" else None,
        idle_since=idle_since,
    )


def decide(
    d: list[PoolDemand],
    allocs: list[Allocation],
    now: float = 1000.0,
    history: dict[str, PoolHistory] | None = None,
    **kw: object,
) -> ScalePlan:
    return decide_scale(
        {x.pool: x for x in d},
        allocs,
        POOLS,
        LIMITS,
        history=history or {},
        now=now,
        config=CONFIG,
        **kw,  # type: ignore[arg-type]
    )


# --- demand -------------------------------------------------------------------------------------


def test_share_is_the_dominant_resource() -> None:
    assert share(Resources(cpus=2), CPU) == 0.25
    assert share(Resources(cpus=1, memory=4 * GIB), CPU) == 0.5
    assert share(Resources(cpus=1, gpus=1), GPU) == 0.25
    assert share(Resources(cpus=64), CPU) == 1.0
    assert share(Resources(cpus=8, nodes=3), CPU) == 3.0


def test_pool_demand_sums() -> None:
    d = pool_demand(
        "cpu",
        CPU,
        [(Resources(cpus=2), 100.0), (Resources(cpus=8), None)],
        [Resources(cpus=4)],
        default_estimate_s=50.0,
    )
    assert (d.queued, d.queued_share, d.queued_node_s) == (2, 1.25, 0.25 * 100 + 1.0 * 50)
    assert (d.shortest_s, d.longest_s, d.widest) == (50.0, 100.0, 1.0)
    assert (d.running, d.running_share) == (1, 0.5)
    assert pool_demand("cpu", CPU, []) == PoolDemand("cpu")


def test_estimate_nodes_between_widest_and_all_at_once() -> None:
    # 200 tasks of 1/8 node, 30 s each: 750 node-s / 60 s = 12.5 nodes, all at once 25
    assert estimate_nodes(demand(queued=200, estimate=30), CONFIG) == pytest.approx(12.5)
    # long tasks: bounded by running everything at once
    assert estimate_nodes(demand(queued=16, estimate=3600), CONFIG) == pytest.approx(2.0)
    # one tiny 8-node MPI task still needs 8 nodes
    assert estimate_nodes(demand(queued=1, share_each=8.0, estimate=1), CONFIG) == 8.0
    assert estimate_nodes(demand(queued=0, running=8), CONFIG) == 1.0
    assert estimate_nodes(PoolDemand("cpu"), CONFIG) == 0.0


def test_a_pool_that_waits_long_asks_for_fewer_nodes() -> None:
    # 750 node-s of queued work: drained in 60 s by 12.5 nodes; when allocations of
    # the pool have waited 300 s, 2.5 nodes (more would start after the work is done)
    busy = demand(queued=200, estimate=30)
    waits = replace(busy, expected_wait_s=300.0)
    assert estimate_nodes(waits, CONFIG) == pytest.approx(2.5)
    quick = replace(busy, expected_wait_s=2.0)
    assert estimate_nodes(quick, CONFIG) == pytest.approx(12.5)  # the drain target still holds


def test_default_drain_target_asks_for_a_burst_at_once() -> None:
    # 195 half-second tasks (Blast's fan-out): 12 node-s, drained in 5 s by 2.4 nodes
    assert estimate_nodes(demand(queued=195, estimate=0.5)) == pytest.approx(195 * 0.0625 / 5)
    assert ScaleConfig().drain_target_s == 5.0


def test_about_ready_looks_one_level_ahead_over_short_parents() -> None:
    estimates: dict[str, float | None] = {"a": 1.0, "b": 10.0, "long": 3600.0, "unknown": None}
    state = {"a": "ready", "b": "running", "long": "running", "unknown": "ready", "d": "done"}
    assert about_ready(("a", "b", "d"), state, estimates)
    assert about_ready((), state, estimates)
    assert not about_ready(("a", "long"), state, estimates)  # its parent ends in an hour
    assert not about_ready(("unknown",), state, estimates)
    assert not about_ready(("a", "waiting"), state, estimates)  # two levels ahead
    assert about_ready(("long",), state, estimates, ScaleConfig(lookahead_s=7200))
    assert not about_ready(("a",), state, estimates, ScaleConfig(lookahead_s=0))


def test_target_allocations_bounds() -> None:
    big = demand(queued=1000, estimate=600)
    assert target_allocations(big, POOLS[0], 4, CONFIG) == 4
    assert target_allocations(big, PoolShape("p", "dev", "cpu", max_allocations=3), 4, CONFIG) == 3
    assert (
        target_allocations(big, PoolShape("p", "dev", "cpu", nodes_per_allocation=3), 4, CONFIG)
        == 1
    )
    assert (
        target_allocations(
            PoolDemand("p"), PoolShape("p", "dev", "cpu", min_allocations=2), 4, CONFIG
        )
        == 2
    )


# --- scale up -----------------------------------------------------------------------------------


def test_burst_scales_from_zero_to_what_the_partition_holds() -> None:
    plan = decide([demand(queued=200, estimate=30)], [])
    assert [(s.pool, s.count, s.nodes) for s in plan.submits] == [("cpu", 4, 1)]
    assert "200 task(s) queued" in plan.submits[0].reason
    assert any("demand is 13 allocation(s), partition cpu has 4" in h for h in plan.held)
    assert not plan.releases


def test_pending_allocations_count_as_capacity() -> None:
    pending = [alloc(i, state="pending", submitted=990.0) for i in range(4)]
    plan = decide([demand(queued=200, estimate=30)], pending)
    assert plan.empty


def test_scale_up_needs_to_exceed_hysteresis() -> None:
    limits = {"dev": SiteLimits("dev", (PartitionLimits("cpu", 100, 8, 8 * GIB),))}
    busy = [alloc(i) for i in range(40)]
    want_41 = demand(queued=8 * 41 - 8 * 40, estimate=600, running=8 * 40)
    plan = decide_scale(
        {"cpu": want_41}, busy, POOLS[:1], limits, history={}, now=1000.0, config=CONFIG
    )
    assert plan.empty  # 1 more wanted, 4 needed to exceed 10 % of 40
    want_45 = demand(queued=8 * 5, estimate=600, running=8 * 40)
    plan = decide_scale(
        {"cpu": want_45}, busy, POOLS[:1], limits, history={}, now=1000.0, config=CONFIG
    )
    assert plan.submits[0].count == 5


def test_max_submit_jobs_counts_other_jobs_and_all_pools() -> None:
    limits = {"dev": SiteLimits("dev", (CPU, GPU), max_submit_jobs=4)}
    plan = decide_scale(
        {
            "cpu": demand(queued=200, estimate=30),
            "gpu": demand("gpu", queued=8, share_each=0.25, estimate=600),
        },
        [alloc(1, pool="gpu")],
        POOLS,
        limits,
        history={},
        now=1000.0,
        config=CONFIG,
        other_jobs={"dev": 1},
    )
    assert sum(s.count for s in plan.submits) == 2  # 4 - 1 allocation - 1 driver job
    assert any("MaxSubmitJobs 4" in h for h in plan.held)


def test_largest_deficit_goes_first_under_limits() -> None:
    limits = {"dev": SiteLimits("dev", (CPU, GPU), max_submit_jobs=3)}
    plan = decide_scale(
        {"cpu": demand(queued=200, estimate=30), "gpu": demand("gpu", queued=1, share_each=0.25)},
        [],
        POOLS,
        limits,
        history={},
        now=1000.0,
        config=CONFIG,
    )
    assert [(s.pool, s.count) for s in plan.submits] == [("cpu", 3)]


def test_hold_submits_nothing_but_still_releases() -> None:
    idle = [alloc(1, idle_since=0.0)]
    plan = decide(
        [demand(queued=0), demand("gpu", queued=4, share_each=0.25)], idle, hold="run budget spent"
    )
    assert not plan.submits
    assert [r.allocation for r in plan.releases] == ["1"]
    assert any("run budget spent" in h for h in plan.held)


def test_submit_walltime_is_sized_to_the_work_and_capped() -> None:
    plan = decide([demand(queued=8, share_each=1.0, estimate=600)], [])
    (submit,) = plan.submits
    assert submit.count == 4  # 8 whole-node tasks, the partition has 4 nodes
    # 8 x 600 node-s over 4 nodes + the longest = 1800 s of work -> padded to the 45 min bucket
    assert submit.walltime_s == 2700.0
    plan = decide([demand("gpu", queued=8, share_each=1.0, estimate=3000)], [])
    assert plan.submits[0].walltime_s == 3600.0  # 9000 s of work, the gpu partition's limit


# --- scale down ---------------------------------------------------------------------------------


def test_release_only_after_idle_timeout() -> None:
    allocs = [alloc(1, idle_since=950.0), alloc(2, idle_since=900.0)]
    plan = decide([PoolDemand("cpu")], allocs, now=1000.0)
    assert [r.allocation for r in plan.releases] == ["2"]
    assert "idle for 100s" in plan.releases[0].reason
    plan = decide([PoolDemand("cpu")], allocs, now=1010.0)
    assert sorted(r.allocation for r in plan.releases) == ["1", "2"]


def test_busy_allocations_are_never_released() -> None:
    plan = decide([demand(running=1)], [alloc(1), alloc(2, idle_since=0.0)])
    assert [r.allocation for r in plan.releases] == ["2"]


def test_release_waits_for_cooldown_after_scale_up() -> None:
    history = {"cpu": PoolHistory(last_up=990.0)}
    plan = decide([PoolDemand("cpu")], [alloc(1, idle_since=0.0)], history=history)
    assert not plan.releases
    assert any("cool-down" in h for h in plan.held)


def test_scale_up_waits_for_cooldown_after_scale_down() -> None:
    history = {"cpu": PoolHistory(last_down=990.0)}
    plan = decide([demand(queued=8)], [], history=history)
    assert not plan.submits and any("cool-down" in h for h in plan.held)
    plan = decide([demand(queued=8)], [], history=history, now=1020.0)
    assert plan.submits


def test_release_keeps_hysteresis_headroom_and_min_allocations() -> None:
    # target 10 (80 running tasks of 1/8 node): keep 10 + 10 % = 11 of 12
    limits = {"dev": SiteLimits("dev", (PartitionLimits("cpu", 100, 8, 8 * GIB),))}
    allocs = [alloc(i, idle_since=0.0) for i in range(12)]
    plan = decide_scale(
        {"cpu": demand(running=80)},
        allocs,
        POOLS[:1],
        limits,
        history={},
        now=1000.0,
        config=CONFIG,
    )
    assert len(plan.releases) == 1
    allocs = allocs[:4]
    pools = [PoolShape("cpu", "dev", "cpu", min_allocations=2)]
    plan = decide_scale({}, allocs, pools, LIMITS, history={}, now=1000.0, config=CONFIG)
    assert len(plan.releases) == 2


def test_releases_pending_first_then_least_walltime_left() -> None:
    allocs = [
        alloc(1, idle_since=0.0, walltime=3600.0),
        alloc(2, idle_since=0.0, walltime=1800.0),
        alloc(3, state="pending", submitted=0.0),
    ]
    plan = decide([demand(running=16)], allocs)  # target 2
    assert [r.allocation for r in plan.releases] == ["3"]
    plan = decide([PoolDemand("cpu")], allocs)
    assert [r.allocation for r in plan.releases] == ["3", "2", "1"]
    assert "pending" in plan.releases[0].reason


def test_recent_pending_allocation_is_not_released() -> None:
    plan = decide([PoolDemand("cpu")], [alloc(1, state="pending", submitted=980.0)])
    assert plan.empty


def test_idle_allocation_too_short_for_queued_work_is_retired_and_replaced() -> None:
    # 120 s left: too short for a 600 s task; a fresh allocation is asked for
    short = alloc(1, started=0.0, walltime=1120.0, idle_since=990.0)
    plan = decide([demand(queued=1, estimate=600)], [short])
    assert [(r.allocation, r.surplus) for r in plan.releases] == [("1", False)]
    assert plan.submits and plan.submits[0].walltime_s >= 600
    history = record({}, plan, 1000.0)
    assert history["cpu"].last_down is None  # a retirement starts no cool-down


def test_tasks_longer_than_the_partition_allows_get_no_allocation() -> None:
    # 5000 s tasks cannot fit the gpu partition's 1 h: asking would retire and resubmit forever
    plan = decide([demand("gpu", queued=4, share_each=0.25, estimate=5000)], [])
    assert not plan.submits
    assert any("longer than partition gpu allows" in h for h in plan.held)


def test_record_history() -> None:
    plan = decide([demand(queued=8)], [])
    history = record({}, plan, 1000.0)
    assert history == {"cpu": PoolHistory(last_up=1000.0, last_down=None)}
    plan = decide([PoolDemand("cpu")], [alloc(1, idle_since=0.0)], now=2000.0, history=history)
    assert record(history, plan, 2000.0)["cpu"] == PoolHistory(1000.0, 2000.0)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="negative"):
        ScaleConfig(cooldown_s=-1)
    with pytest.raises(ValueError, match="positive"):
        ScaleConfig(drain_target_s=0)
    with pytest.raises(ValueError):
        ScaleConfig(lookahead_s=-1)

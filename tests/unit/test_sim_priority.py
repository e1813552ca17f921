"""priority/multifactor in the simulated Slurm: the factors, their reading from slurm.conf,
and the order they give the queue."""

from __future__ import annotations

import pytest

from hpcorch.errors import SpecError
from hpcorch.sim.engine import EventLoop
from hpcorch.sim.priority import Multifactor, fair_tree_factors
from hpcorch.sim.schedconf import parse_slurm_conf, slurm_time_s
from hpcorch.sim.slurm import SimSlurm

CONF = """\
SchedulerType=sched/backfill
PriorityType=priority/multifactor
PriorityWeightAge=1000
PriorityWeightJobSize=2000
PriorityWeightPartition=500
PriorityWeightQOS=100
PriorityWeightFairshare=3000
PriorityMaxAge=1-0
PriorityDecayHalfLife=0-12
PriorityCalcPeriod=2
PriorityFavorSmall=NO
PartitionName=cpu Nodes=cpu[1-2] PriorityJobFactor=10 Default=YES
PartitionName=debug Nodes=cpu[1-2] PriorityJobFactor=40
"""


def test_slurm_time_strings() -> None:
    assert slurm_time_s("5") == 300.0
    assert slurm_time_s("1:30") == 90.0
    assert slurm_time_s("2:00:00") == 7200.0
    assert slurm_time_s("7-0") == 7 * 86400.0
    assert slurm_time_s("1-2:03:04") == 86400 + 2 * 3600 + 3 * 60 + 4
    with pytest.raises(ValueError, match="not a Slurm time"):
        slurm_time_s("1:2:3:4")


def test_multifactor_is_read_from_slurm_conf() -> None:
    prio = parse_slurm_conf(CONF, qos_priorities={"normal": 10, "high": 50}).priority
    assert prio == Multifactor(
        weight_age=1000, weight_job_size=2000, weight_partition=500, weight_qos=100,
        weight_fairshare=3000, max_age_s=86400.0, decay_half_life_s=12 * 3600.0,
        calc_period_s=120.0, partition_factors={"cpu": 10.0, "debug": 40.0},
        qos_priorities={"normal": 10.0, "high": 50.0},
    )  # fmt: skip
    assert parse_slurm_conf("PriorityType=priority/basic\n").priority is None
    assert parse_slurm_conf("").priority is None  # Slurm's default: priority/basic
    with pytest.raises(SpecError, match=r"slurm\.conf:1: PriorityType 'priority/x'"):
        parse_slurm_conf("PriorityType=priority/x\n")
    with pytest.raises(SpecError, match=r"slurm\.conf:2:"):
        parse_slurm_conf("PriorityType=priority/multifactor\nPriorityMaxAge=x\n")


def test_factors() -> None:
    prio = parse_slurm_conf(CONF, qos_priorities={"normal": 10, "high": 50}).priority
    assert prio is not None
    # 1 of 4 nodes, 8 of 32 CPUs: size 0.25; partition cpu 10/40; QOS high 50/50
    assert prio.static(1, 8, 4, 32, "cpu", "high") == pytest.approx(2000 * 0.25 + 500 * 0.25 + 100)
    # the dev cluster (4 nodes, 32 CPUs) on PriorityWeightJobSize=1000 logged InitPrio=140
    # for a 1-CPU job and 156 for a 2-CPU one
    size = Multifactor(weight_job_size=1000)
    assert [size.priority(size.static(1, n, 4, 32), 0.0, 0.0) for n in (1, 2)] == [140, 156]
    small = Multifactor(weight_job_size=1000, favor_small=True)
    assert small.static(1, 8, 4, 32) == pytest.approx(1000 * 0.75)
    # age grows to PriorityMaxAge and stops; the sum is a whole number
    assert prio.priority(0.0, 43200.0, 0.0) == 500.0
    assert prio.priority(0.4, 10 * 86400.0, 0.5) == 1000.0 + 1500.0
    assert prio.decay(12 * 3600.0) == pytest.approx(0.5)


def test_fair_tree_ranks_users_by_usage() -> None:
    assert fair_tree_factors([0.0, 50.0, 10.0]) == [1.0, pytest.approx(1 / 3), pytest.approx(2 / 3)]
    assert fair_tree_factors([5.0, 5.0]) == [1.0, 1.0]  # a tie shares the top rank
    assert fair_tree_factors([]) == []


def _cluster(prio: Multifactor, units: int = 8) -> tuple[EventLoop, SimSlurm]:
    loop = EventLoop()
    return loop, SimSlurm(loop, units, scheduler="fifo", priority=prio)


def test_job_size_puts_a_wide_job_first() -> None:
    loop, sim = _cluster(Multifactor(weight_job_size=1000))
    sim.submit(8, 60.0, 10.0)  # holds the cluster until 10
    sim.submit(2, 60.0, 10.0, submit_time=0.0)  # small, first in line by submit
    sim.submit(8, 60.0, 10.0, submit_time=0.0)  # wide: higher priority, goes first
    loop.run()
    assert sim.j_first_start == [0.0, 20.0, 10.0]


@pytest.mark.parametrize(("busy_until", "starts"), [(15.0, [15.0, 25.0]), (35.0, [45.0, 35.0])])
def test_the_order_follows_age_at_each_pass(busy_until: float, starts: list[float]) -> None:
    # a 1-unit job since 0 against an 8-unit one since 10, PriorityMaxAge 20 s: at 15 the
    # small one's age puts it ahead (1500 + 62 against 500 + 500); from 30 both ages are
    # capped and size decides (2062 against 2500)
    prio = Multifactor(weight_job_size=500, weight_age=2000, max_age_s=20.0)
    loop, sim = _cluster(prio)
    sim.submit(8, 200.0, busy_until)
    loop.at(0.0, loop.register(lambda _: sim.submit(1, 60.0, 10.0)))
    loop.at(10.0, loop.register(lambda _: sim.submit(8, 60.0, 10.0)))
    loop.run()
    assert sim.j_first_start == [0.0, *starts]


def test_fair_share_puts_the_lighter_user_first() -> None:
    loop, sim = _cluster(Multifactor(weight_fairshare=1000, calc_period_s=30))
    sim.submit(8, 60.0, 50.0, user=1)  # user 1 uses the cluster until 50
    loop.at(10.0, loop.register(lambda _: sim.submit(8, 60.0, 10.0, user=1)))
    loop.at(20.0, loop.register(lambda _: sim.submit(8, 60.0, 10.0, user=2)))
    loop.run()
    # at 30 user 1 has 240 CPU-seconds used and user 2 none: user 2's later job first
    assert sim.j_first_start == [0.0, 60.0, 50.0]


def test_partition_factor_orders_partitions() -> None:
    prio = Multifactor(weight_partition=100, partition_factors={"low": 1, "high": 5})
    loop, sim = _cluster(prio)
    sim.submit(8, 60.0, 10.0, partition="low")
    sim.submit(8, 60.0, 10.0, partition="low", submit_time=0.0)
    sim.submit(8, 60.0, 10.0, partition="high", submit_time=0.0)
    loop.run()
    assert sim.j_first_start == [10.0, 20.0, 0.0]  # the first pass sees all three

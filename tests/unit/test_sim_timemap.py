"""Slurm-style conservative backfilling: the time map and the "slurm" scheduler."""

from __future__ import annotations

import math

import pytest

from hpcorch.errors import SpecError
from hpcorch.sim.engine import EventLoop
from hpcorch.sim.replay import ReplayJob, TraceFeeder
from hpcorch.sim.schedconf import SchedulerConfig, parse_slurm_conf
from hpcorch.sim.slurm import SimSlurm
from hpcorch.sim.timemap import TimeMap


def test_earliest_slot_respects_every_step() -> None:
    space = TimeMap(0.0, 2, resolution=1.0)
    space.release(10.0, 2)  # a running job ends at 10: 4 free after
    assert space.earliest(2, 5.0) == 0.0
    assert space.earliest(3, 5.0) == 10.0
    space.take(10.0, 20.0, 3)  # a reservation: 1 free from 10 to 30
    assert space.earliest(2, 15.0) == 30.0  # a 2-unit job must not run into it
    assert space.earliest(1, 100.0) == 0.0  # 1 unit stays free beside the reservation
    assert space.earliest(2, 5.0) == 0.0  # ... unless it ends before the reservation
    assert space.earliest(5, 1.0) == math.inf
    assert space.earliest(3, 1.0, horizon=5.0) == math.inf


def test_resolution_rounds_ends_up() -> None:
    space = TimeMap(0.0, 0, resolution=60.0)
    space.release(37.0, 4)
    assert space.earliest(4, 10.0) == 60.0


def _starts(jobs: list[ReplayJob], units: int, **kw: object) -> list[float]:
    loop = EventLoop()
    sim = SimSlurm(loop, units, **kw)  # type: ignore[arg-type]
    TraceFeeder(loop, sim, iter(jobs), overrun="kill")
    loop.run()
    return sim.j_first_start


def test_slurm_backfill_reserves_for_every_tested_job_not_only_the_head() -> None:
    # 4 units. A holds 3 until 100; B (all 4) is the head, reserved at 100; C (2 units,
    # 300 s) is reserved at 200, after B; D (1 unit, 50 s) fits before B's reservation.
    # Slurm starts D at its next backfill cycle (the first ran at 1 s, when B queued; the
    # thread then sleeps bf_interval: 6 s), EASY at once. E (1 unit, 500 s)
    # arrives at 10: it would run into B's reservation, so it starts beside C at 200.
    jobs = [
        ReplayJob(0.0, 3, 100.0, 100.0, -1.0, False),
        ReplayJob(1.0, 4, 100.0, 100.0, -1.0, False),
        ReplayJob(2.0, 2, 300.0, 300.0, -1.0, False),
        ReplayJob(3.0, 1, 50.0, 50.0, -1.0, False),
        ReplayJob(10.0, 1, 500.0, 500.0, -1.0, False),
    ]
    slurm = _starts(jobs, 4, scheduler="slurm", bf_interval_s=5.0, bf_resolution_s=1.0)
    assert slurm[:4] == [0.0, 100.0, 200.0, 6.0]  # D waits for the next backfill cycle
    assert slurm[4] == 200.0  # E fits beside C after B
    easy = _starts(jobs, 4)
    assert easy[3] == 3.0  # EASY backfills at every event


def test_unknown_scheduler_is_refused() -> None:
    with pytest.raises(ValueError, match="scheduler must be one of"):
        SimSlurm(EventLoop(), 4, scheduler="lottery")  # type: ignore[arg-type]


def test_slurm_conf_scheduler_settings() -> None:
    text = (
        "ClusterName=x\n"
        "SchedulerType=sched/backfill  # comment\n"
        "schedulerparameters=bf_interval=5,bf_resolution=30,bf_window=120,"
        "bf_max_job_test=100,bf_continue\n"
        "OverTimeLimit=2\n"
    )
    config = parse_slurm_conf(text)
    assert config == SchedulerConfig("slurm", 5.0, 30.0, 7200.0, 100, 120.0)
    assert parse_slurm_conf("SchedulerType=sched/builtin\n").scheduler == "fifo"
    assert parse_slurm_conf("") == SchedulerConfig()  # Slurm's defaults
    with pytest.raises(SpecError, match=r"slurm.conf:1: .*sched/wiki"):
        parse_slurm_conf("SchedulerType=sched/wiki\n")
    with pytest.raises(SpecError, match=r"slurm\.conf:1"):
        parse_slurm_conf("SchedulerParameters=bf_interval=soon\n")


def test_slurm_backfill_on_shared_nodes_reserves_whole_nodes() -> None:
    # 2 nodes of 4 cores. A holds 3 cores of one node until 100, B 3 of the other until 50;
    # C (6 cores) is the head: reserved from 50 (rounded down to 0 by bf_resolution 60) on
    # whole nodes — so D (1 core, 30 s), though a core is free beside A and beside B now,
    # finds both nodes held and waits; pooled cores (one unit per node) would backfill it.
    jobs = [
        ReplayJob(0.0, 3, 100.0, 100.0, -1.0, False),
        ReplayJob(0.0, 3, 50.0, 50.0, -1.0, False),
        ReplayJob(1.0, 6, 100.0, 100.0, -1.0, False),
        ReplayJob(2.0, 1, 30.0, 30.0, -1.0, False),
    ]
    shared = _starts(jobs, 8, scheduler="slurm", bf_interval_s=5.0, cores_per_node=4)
    assert shared[2] == 100.0 and shared[3] > 2.0
    pooled = _starts(jobs, 8, scheduler="slurm", bf_interval_s=5.0, bf_resolution_s=1.0)
    assert pooled[3] == 6.0


def test_shared_node_backfill_never_oversubscribes() -> None:
    import random  # noqa: PLC0415

    rng = random.Random(7)
    t = 0.0
    jobs = []
    for _ in range(120):
        t += rng.expovariate(1 / 8.0)
        limit = rng.choice((60.0, 120.0, 180.0))
        cores = rng.choice((1, 2, 4, 8))
        jobs.append(ReplayJob(t, cores, limit, rng.uniform(1, limit), -1.0, False))
    loop = EventLoop()
    sim = SimSlurm(loop, 16, scheduler="slurm", bf_interval_s=5.0, cores_per_node=8)
    TraceFeeder(loop, sim, iter(jobs), overrun="kill")
    events = []
    loop.run()
    for jid in range(sim.jobs):
        events += [(sim.j_first_start[jid], sim.j_need[jid]), (sim.j_end[jid], -sim.j_need[jid])]
    used = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        used += delta
        assert used <= 16
    assert all(s >= j.submit for s, j in zip(sim.j_first_start, jobs, strict=True))

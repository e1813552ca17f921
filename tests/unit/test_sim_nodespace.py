"""Slurm's backfill on shared nodes: whole-node reservations (hpcorch.sim.nodespace)."""

from __future__ import annotations

from hpcorch.sim.nodespace import NodeSpace, pick_nodes


def test_reservations_match_a_slurmctld_backfill_cycle() -> None:
    # One backfill cycle of the dev cluster's slurmctld (22.05, bf_resolution 60 s,
    # debug flags Backfill,BackfillMap), times in seconds after 16:15:00. Two 8-core
    # nodes: cpu1 fully used until 177; cpu2 has 3 cores free, 2 more at 109 and 164,
    # 1 at 185 (running jobs' start + time limit). The log's reservations, job by job:
    #   4 cores 60 s  -> 16:16:49 cpu2     8 cores 120 s -> 16:17:57 cpu1
    #   1 core 120 s  -> 16:17:00 cpu2     8 cores 120 s -> 16:19:00 cpu1
    #   8 cores 60 s  -> 16:19:00 cpu2     1 core 180 s  -> 16:20:00 cpu2
    #   8 cores 60 s  -> 16:21:00 cpu1     2 cores 60 s  -> 16:22:00 cpu1
    space = NodeSpace(14.0, [0, 3], resolution=60.0)
    for node, when, cores in ((0, 177.0, 8), (1, 164.0, 2), (1, 109.0, 2), (1, 185.0, 1)):
        space.release(node, when, cores)
    jobs = [
        (4, 60.0),
        (8, 120.0),
        (1, 120.0),
        (8, 120.0),
        (8, 60.0),
        (1, 180.0),
        (8, 60.0),
        (2, 60.0),
    ]
    got = []
    for cores, limit in jobs:
        when, free = space.earliest(cores, limit)
        nodes = pick_nodes(free, cores)
        space.hold(nodes, when, limit)
        got.append((when, nodes))
    assert got == [
        (109.0, [1]), (177.0, [0]), (120.0, [1]), (240.0, [0]),
        (240.0, [1]), (300.0, [1]), (360.0, [0]), (420.0, [0]),
    ]  # fmt: skip


def test_a_job_may_use_a_held_node_only_outside_the_hold() -> None:
    space = NodeSpace(0.0, [4, 4], resolution=60.0)
    space.hold([0], 130.0, 60.0)  # held [120, 180]
    assert not space.usable(0, 0.0, 120.0)  # ends as the hold begins: Slurm counts it
    assert space.usable(0, 0.0, 119.0) and space.usable(0, 180.0, 240.0)
    assert space.earliest(6, 150.0) == (180.0, [4, 4])  # both nodes, after the hold
    space.hold([0], 100.0, 30.0)  # [60, 120]: merged with the one after it
    assert not space.usable(0, 70.0, 80.0) and space.usable(0, 0.0, 59.0)


def test_pick_nodes_best_fit_then_widest() -> None:
    assert pick_nodes([8, 3, 5], 4) == [2]  # the fullest node that holds it
    assert pick_nodes([3, 2, 5], 7) == [2, 0]  # none holds it: the emptiest first
    assert pick_nodes([0, 8], 2) == [1]

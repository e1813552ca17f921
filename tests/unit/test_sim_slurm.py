"""The simulated Slurm: EASY backfilling on hand-made cases, failures, preemption, cancel."""

from __future__ import annotations

import math
import random

import pytest

from hpcorch.errors import ResourceError
from hpcorch.sim.engine import EventLoop
from hpcorch.sim.slurm import SimJobState, SimSlurm


def _cluster(nodes: int, **kwargs: object) -> tuple[EventLoop, SimSlurm]:
    loop = EventLoop()
    return loop, SimSlurm(loop, nodes, **kwargs)  # type: ignore[arg-type]


def test_backfill_only_jobs_that_end_before_the_shadow() -> None:
    loop, c = _cluster(4)
    a = c.submit(3, 100, 100)
    head = c.submit(4, 50, 50)
    short = c.submit(1, 50, 50)  # ends at 50 < shadow 100: backfills
    long_ = c.submit(1, 200, 200)  # would hold a node past the shadow, no extra nodes
    loop.run()
    assert c.j_start[a] == 0 and c.j_start[short] == 0
    assert c.j_start[head] == 100
    assert c.j_start[long_] == 150
    assert all(s is SimJobState.COMPLETED for s in c.j_state)


def test_backfill_into_extra_nodes_uses_them_up() -> None:
    loop, c = _cluster(4)
    c.submit(2, 100, 100)
    head = c.submit(3, 10, 10)  # shadow 100, extra = 4 - 3 = 1
    first = c.submit(1, 1000, 1000)  # runs past the shadow but fits the extra node
    second = c.submit(1, 1000, 1000)  # a node is free, but the extra one is used up
    loop.run()
    assert c.j_start[first] == 0
    assert c.j_start[head] == 100
    assert c.j_start[second] == 110


def test_walltime_reservation_uses_requested_time_not_runtime() -> None:
    loop, c = _cluster(2)
    c.submit(1, 1000, 10)  # asks for 1000 s, ends after 10
    head = c.submit(2, 10, 10)
    backfill = c.submit(1, 500, 500)  # ends before the shadow (1000) as Slurm sees it
    loop.run()
    assert c.j_start[backfill] == 0
    assert c.j_start[head] == 500  # the early end could not be foreseen


@pytest.mark.parametrize("seed", range(5))
def test_backfilled_jobs_never_delay_the_head_reservation(seed: int) -> None:
    rng = random.Random(seed)
    loop, c = _cluster(16)
    c.reservations = []
    t = 0.0
    for _ in range(400):
        t += rng.expovariate(1 / 30)
        req = rng.choice([60, 300, 900, 3600])
        c.submit(rng.choice([1, 1, 2, 4, 8, 16]), req, req * rng.random(), submit_time=t)
        loop.run(until=t)
    loop.run()
    assert c.reservations
    for jid, shadow in c.reservations:
        assert c.j_start[jid] <= shadow + 1e-9
    assert all(s is SimJobState.COMPLETED for s in c.j_state)


def test_fifo_without_backfill_is_slower() -> None:
    def mean_wait(limit: int | None) -> float:
        rng = random.Random(7)
        loop, c = _cluster(8, bf_max_job_test=limit)
        for i in range(200):
            req = rng.choice([60, 600, 3600])
            c.submit(rng.choice([1, 2, 8]), req, req, submit_time=i * 20.0)
            loop.run(until=i * 20.0)
        loop.run()
        return sum(s - b for s, b in zip(c.j_start, c.j_submit, strict=True)) / c.jobs

    assert mean_wait(None) < mean_wait(0)


class _Owner:
    def __init__(self) -> None:
        self.log: list[tuple[str, int, object]] = []

    def job_started(self, jid: int, nodes: list[int]) -> None:
        self.log.append(("start", jid, tuple(nodes)))

    def job_ended(self, jid: int, state: SimJobState) -> None:
        self.log.append(("end", jid, state))


def test_node_failure_requeues_the_job_and_the_node_comes_back() -> None:
    loop, c = _cluster(2, repair_s=50)
    owner = _Owner()
    jid = c.submit(2, 100, 100, owner=owner)
    loop.run(until=10)
    failed_node = c.j_nodes[jid][0]  # type: ignore[index]
    c.fail_node(failed_node)
    loop.run()
    assert [e[0] for e in owner.log] == ["start", "end", "start", "end"]
    assert owner.log[1][2] is SimJobState.NODE_FAIL
    assert c.j_start[jid] == 60  # restarted when the node returned
    assert c.j_state[jid] is SimJobState.COMPLETED
    assert c.j_requeues[jid] == 1 and c.node_failures == 1 and c.free_nodes == 2


def test_random_node_failures_stop_when_the_work_is_done() -> None:
    loop, c = _cluster(10, mtbf_s=2000, repair_s=30, seed=3)
    for _ in range(50):
        c.submit(2, 200, 100, submit_time=0.0)
    loop.run()
    assert c.node_failures > 0
    assert all(s is SimJobState.COMPLETED for s in c.j_state)
    assert loop.pending == 0


def test_preemption_requeues_preemptible_low_tier_jobs() -> None:
    loop, c = _cluster(4)
    owner = _Owner()
    low = c.submit(4, 1000, 1000, preemptible=True, owner=owner)
    loop.run(until=100)
    urgent = c.submit(2, 50, 50, tier=1)
    loop.run()
    assert c.j_start[urgent] == 100
    assert c.preemptions == 1 and c.j_requeues[low] == 1
    assert ("end", low, SimJobState.PREEMPTED) in owner.log
    assert c.j_start[low] == 150 and c.j_end[low] == 1150


def test_walltime_kill_and_cancel() -> None:
    loop, c = _cluster(2)
    alloc = c.submit(1, 100)  # runs until cancelled or walltime
    killed = c.submit(1, 10, 20)
    loop.run()
    assert c.j_state[alloc] is SimJobState.TIMEOUT and c.j_end[alloc] == 100
    assert c.j_state[killed] is SimJobState.TIMEOUT and c.j_end[killed] == 10
    pending_job = c.submit(3 - 1, 10, 10)
    blocker = c.submit(2, 10, math.inf)
    c.cancel(blocker)
    loop.run()
    assert c.j_state[blocker] is SimJobState.CANCELLED
    assert c.j_state[pending_job] is SimJobState.COMPLETED
    with pytest.raises(ResourceError, match="--nodes"):
        c.submit(3, 10, 10)

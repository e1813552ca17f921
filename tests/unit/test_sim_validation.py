"""The simulator's EASY against a separately written reference, on logs of different shapes.

Shapes: KTH-SP2 (the one Parallel Workloads Archive log shipped: 100 processors,
accurate-ish estimates, 475 overruns) and three synthetic SWF logs
(tests/unit/swf_synth.py): a small machine with accurate estimates, a 1,024-
processor machine whose users under-estimate (a third of the jobs with a request
overrun it, up to 2.5x) and a quarter ask for no time, and a 4,096-processor
machine with wide jobs. Each is replayed in both overrun modes; the mean wait must
be within 5 % of the reference's and the utilization within 2 points of the log's.
Property tests check the invariants on random small workloads: the machine is never
over-committed, and with exact estimates no backfilled job delays the head job.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcorch.sim.engine import EventLoop
from hpcorch.sim.replay import (
    ReplayJob,
    TraceFeeder,
    replay,
    replay_swf,
    swf_jobs,
    swf_longest_request,
)
from hpcorch.sim.slurm import SimSlurm
from hpcorch.traces import resolve_trace
from tests.unit.easy_reference import RefJob, easy
from tests.unit.swf_synth import SHAPES, write_swf

KTH = "KTH-SP2-1996-2.1-cln.swf.gz"


def _log(name: str, tmp_path: Path) -> Path:
    if name == "kth":
        return Path(resolve_trace(KTH))
    shape = next(s for s in SHAPES if s.name == name)
    return write_swf(shape, tmp_path / f"{name}.swf")


def _ref_jobs(path: Path) -> list[RefJob]:
    default = swf_longest_request(path)
    assert default is not None
    return [
        RefJob(j.submit, j.nodes, j.req_time if j.req_time > 0 else default, j.run_time)
        for j in swf_jobs(path)
    ]


def _utilization(jobs: list[RefJob], starts: list[float], procs: int) -> float:
    work = sum(j.nodes * j.run for j in jobs)
    span = max(s + j.run for s, j in zip(starts, jobs, strict=True)) - min(j.submit for j in jobs)
    return work / (procs * span)


@pytest.mark.parametrize("name", ["kth", *(s.name for s in SHAPES)])
@pytest.mark.parametrize("overrun", ["replay", "kill"])
def test_mean_wait_matches_the_reference_easy(name: str, overrun: str, tmp_path: Path) -> None:
    path = _log(name, tmp_path)
    result = replay_swf(path, overrun=overrun)  # type: ignore[arg-type]
    jobs = _ref_jobs(path)
    ref = easy(jobs, result.nodes, kill=overrun == "kill")
    ref_wait = ref.mean_wait(jobs)
    print(f"{name} {overrun}: sim {result.mean_wait_s:.0f} s, reference {ref_wait:.0f} s")
    assert result.dropped == 0 and result.jobs == len(jobs)
    assert abs(result.mean_wait_s - ref_wait) <= 0.05 * ref_wait
    if overrun == "replay":
        # the log's own utilization: recorded starts for KTH, the reference's for the others
        if name == "kth":
            starts = [j.submit + j.recorded_wait for j in swf_jobs(path)]
        else:
            starts = ref.start
        assert abs(result.utilization - _utilization(jobs, starts, result.nodes)) <= 0.02
    else:
        assert result.killed_jobs == result.overrun_jobs


def test_poor_estimates_shape_is_what_it_claims(tmp_path: Path) -> None:
    result = replay_swf(_log("poor-estimates", tmp_path))
    assert result.missing_estimates > 0.2 * result.jobs
    assert result.overrun_jobs > 0.3 * (result.jobs - result.missing_estimates)
    assert result.default_time_s == swf_longest_request(_log("poor-estimates", tmp_path))


def test_a_job_past_its_estimate_does_not_freeze_the_reservation() -> None:
    # 5 nodes. A (4 nodes) asks 100 s, runs 1,000 s. B (4 nodes) queues behind it: its
    # reservation is A's estimate, 100 s. C (1 node, 50 s) arrives at 500 s: the pass
    # then expects A to end *now* (500 s, not a frozen 100 s), so C backfills on the
    # one node B will not need, and B starts when A really ends.
    jobs = [
        ReplayJob(0.0, 4, 100.0, 1000.0, -1.0, False),
        ReplayJob(1.0, 4, 100.0, 100.0, -1.0, False),
        ReplayJob(500.0, 1, 50.0, 50.0, -1.0, False),
    ]
    loop = EventLoop()
    cluster = SimSlurm(loop, 5)
    cluster.reservations = []
    TraceFeeder(loop, cluster, iter(jobs))
    loop.run()
    assert cluster.j_first_start == [0.0, 1000.0, 500.0]
    # set at 1 s to A's estimate, then "now" at every later pass (500 s, 550 s)
    assert [shadow for jid, shadow in cluster.reservations if jid == 1] == [100.0, 500.0, 550.0]
    ref = easy([RefJob(j.submit, j.nodes, j.req_time, j.run_time) for j in jobs], 5)
    assert ref.start == [0.0, 1000.0, 500.0]


def test_kill_mode_applies_over_time_limit() -> None:
    jobs = [
        ReplayJob(0.0, 2, 100.0, 1000.0, -1.0, False),
        ReplayJob(0.0, 2, 10.0, 10.0, -1.0, False),
    ]
    killed = replay(jobs, 2, overrun="kill", over_time_limit_s=60.0)
    assert killed.killed_jobs == 1 and killed.makespan_s == 170.0
    replayed = replay(jobs, 2)
    assert replayed.killed_jobs == 0 and replayed.makespan_s == 1010.0
    with pytest.raises(ValueError, match="overrun must be one of"):
        replay(jobs, 2, overrun="shrug")  # type: ignore[arg-type]


_job = st.tuples(
    st.integers(0, 200),  # submit
    st.integers(1, 8),  # nodes
    st.integers(1, 100),  # requested
    st.integers(1, 150),  # runtime (may overrun)
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_job, min_size=1, max_size=40), st.booleans())
def test_sim_matches_reference_and_never_overcommits(
    raw: list[tuple[int, int, int, int]], kill: bool
) -> None:
    nodes = 8
    raw = sorted(raw, key=lambda r: r[0])
    jobs = [ReplayJob(float(s), n, float(q), float(r), -1.0, False) for s, n, q, r in raw]
    loop = EventLoop()
    cluster = SimSlurm(loop, nodes)
    TraceFeeder(loop, cluster, iter(jobs), overrun="kill" if kill else "replay")
    loop.run()
    starts, ends = cluster.j_first_start, cluster.j_end
    # capacity: at every start, the jobs running then use at most `nodes`
    for t in starts:
        used = sum(j.nodes for j, s, e in zip(jobs, starts, ends, strict=True) if s <= t < e)
        assert used <= nodes
    ref = easy([RefJob(j.submit, j.nodes, j.req_time, j.run_time) for j in jobs], nodes, kill=kill)
    assert starts == pytest.approx(ref.start)


@settings(max_examples=150, deadline=None)
@given(st.lists(_job, min_size=1, max_size=40))
def test_with_exact_estimates_no_backfilled_job_delays_the_head(
    raw: list[tuple[int, int, int, int]],
) -> None:
    nodes = 8
    raw = sorted(raw, key=lambda r: r[0])
    jobs = [ReplayJob(float(s), n, float(q), float(q), -1.0, False) for s, n, q, _ in raw]
    loop = EventLoop()
    cluster = SimSlurm(loop, nodes)
    cluster.reservations = []
    TraceFeeder(loop, cluster, iter(jobs))
    loop.run()
    for jid, shadow in cluster.reservations:
        assert math.isinf(shadow) or cluster.j_first_start[jid] <= shadow + 1e-9

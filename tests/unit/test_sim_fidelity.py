"""The pure half of the simulator-vs-slurmctld comparison: the stream and the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcorch.sim.engine import EventLoop
from hpcorch.sim.fidelity import (
    agreement,
    ctld_log_times,
    ctld_timing,
    noise_floor,
    replay_record,
    simulate_starts,
    stream,
)
from hpcorch.sim.nodespace import NodeSpace
from hpcorch.sim.slurm import SimSlurm
from tests.integration.fidelity_runner import ctld_started, with_scheduler_parameters, with_settings

# slurmctld 22.05's own lines (from the dev cluster's log), a job killed at its limit
CTLD_LOG = """\
[2026-12-03T19:24:37.978] _slurm_rpc_submit_batch_job: JobId=1 InitPrio=4294901759 usec=608
[2026-12-03T19:24:38.263] sched: Allocate JobId=1 NodeList=cpu1 #CPUs=1 Partition=cpu
[2026-12-03T19:24:38.366] _slurm_rpc_submit_batch_job: JobId=2 InitPrio=4294901758 usec=296
[2026-12-03T19:24:38.587] sched/backfill: _start_job: Started JobId=2 in cpu on cpu1
[2026-12-03T19:24:38.877] _slurm_rpc_submit_batch_job: JobId=3 InitPrio=4294901757 usec=386
[2026-12-03T19:24:41.274] sched: Allocate JobId=3 NodeList=cpu1 #CPUs=2 Partition=cpu
[2026-12-03T19:24:43.588] sched/backfill: _start_job: Started JobId=4 in cpu on cpu2
[2026-12-03T19:24:46.127] _job_complete: JobId=1 WEXITSTATUS 0
[2026-12-03T19:24:46.127] _job_complete: JobId=1 done
[2026-12-03T19:24:46.327] sched: Allocate JobId=5 NodeList=cpu1 #CPUs=1 Partition=cpu
[2026-12-03T19:25:41.300] Time limit exhausted for JobId=3
[2026-12-03T19:25:43.100] _job_complete: JobId=3 done
[2026-12-03T19:25:50.000] _job_complete: JobId=2 done
"""


def test_stream_is_deterministic_and_fits_the_partition() -> None:
    jobs = stream(200, 16, seed=3)
    assert jobs == stream(200, 16, seed=3) and jobs != stream(200, 16, seed=4)
    assert all(1 <= j.cores <= 16 and j.limit_min in (1, 2, 3) for j in jobs)
    assert [j.offset_s for j in jobs] == sorted(j.offset_s for j in jobs)
    killed = sum(j.run_s > j.limit_min * 60 for j in jobs)
    assert 0 < killed < 0.15 * len(jobs)


RECORDS = Path(__file__).parent / "data" / "fidelity"

# Real schedules the dev cluster's slurmctld (22.05, bf_interval=1, bf_resolution=5) made of
# two 40-job streams, twice each (2026-12-04), and the simulator's error on each then:
# a live run branches (one backfill decision taken a second apart moves jobs by 20-70 s),
# so the model is pinned here, on fixed runs, and the live test holds only a loose bound.
RECORDED = {
    "seed2-a": (0.181, 0.984),
    "seed2-b": (0.551, 0.912),  # the branch where a 1 s offset spread an 8-core job
    "seed16-a": (0.016, 0.999),
    "seed16-b": (0.171, 0.981),  # two short jobs backfilled for real, held in the simulator
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_real_schedules_replay_no_worse(name: str) -> None:
    error, pairs = RECORDED[name]
    got = replay_record(json.loads((RECORDS / f"{name}.json").read_text()))
    assert got.jobs == 40
    assert got.start_error_mean <= error + 0.01, got
    assert got.pair_order_agreement >= pairs - 0.01, got


def test_agreement_metrics() -> None:
    submit = [0.0, 0.0, 0.0]
    real = [0.0, 10.0, 20.0]
    same = agreement(submit, real, real)
    assert same.start_error_mean == 0.0 and same.pair_order_agreement == 1.0
    swapped = agreement(submit, real, [0.0, 20.0, 10.0])
    assert swapped.mean_real_wait_s == 10.0
    assert swapped.start_error_mean == pytest.approx((0 + 10 + 10) / 3 / 10.0)
    assert swapped.pair_order_agreement == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same non-empty job list"):
        agreement([], [], [])


def test_simulate_starts_in_the_callers_order() -> None:
    # given out of submit order: the second job arrives first and takes both units
    starts = simulate_starts([5.0, 0.0], [2, 2], [60.0, 60.0], [10.0, 10.0], 2)
    assert starts == [10.0, 0.0]


def test_completing_time_delays_the_next_start() -> None:
    starts = simulate_starts([0.0, 1.0], [2, 2], [60.0, 60.0], [10.0, 10.0], 2, completing_s=0.5)
    assert starts == [0.0, 10.5]


def test_noise_floor_is_zero_without_jitter_and_positive_with_it() -> None:
    jobs = stream(60, 16, seed=5)
    args = (
        [j.offset_s for j in jobs], [j.cores for j in jobs],
        [j.limit_min * 60.0 for j in jobs], [min(j.run_s, j.limit_min * 60.0) for j in jobs],
    )  # fmt: skip
    floor = noise_floor(*args, 16, scheduler="slurm", bf_interval_s=5.0, cores_per_node=8)
    assert 0.0 < floor < 10.0
    assert noise_floor(*args, 16, jitter_s=0.0, scheduler="slurm", cores_per_node=8) == 0.0


def test_ctld_log_times_reads_millisecond_stamps() -> None:
    times = ctld_log_times(CTLD_LOG)
    assert set(times) == {"1", "2", "3"}  # 4 and 5 were never seen submitted
    submit, start, end = times["1"]
    assert start - submit == pytest.approx(0.285) and end - start == pytest.approx(7.864)
    _, start3, end3 = times["3"]
    assert end3 - start3 == pytest.approx(60.026)  # the kill, not the later "done"
    assert times["2"][1] - times["2"][0] == pytest.approx(0.221)


def test_ctld_timing_phases_and_completing() -> None:
    origin = ctld_log_times(CTLD_LOG)["1"][0]
    timing = ctld_timing(CTLD_LOG, origin)
    assert timing["bf_phase_s"] == pytest.approx(0.609, abs=0.002)  # .587/.588 - .978
    assert timing["sched_phase_s"] == pytest.approx(0.29, abs=0.01)  # after submits
    assert timing["completing_s"] == pytest.approx(0.2)  # job 5 after job 1's end


def test_a_submit_waits_for_the_background_loop_and_batch_sched_delay() -> None:
    loop = EventLoop()
    sim = SimSlurm(loop, 4, scheduler="slurm", batch_sched_delay_s=3.0, sched_phase_s=0.25,
                   bf_interval_s=100.0, bf_phase_s=0.9)  # fmt: skip
    for t in (0.5, 1.5):
        loop.at(t, loop.register(lambda _: sim.submit(1, 60.0, 5.0)))
    loop.run()
    # the first at the backfill thread's next poll (0.9, before the loop's tick at 1.25,
    # which then runs the main scheduler); the second 3 whole seconds after that run
    assert sim.j_first_start == [0.9, 4.25]


def test_reservations_round_the_wall_clock() -> None:
    # Slurm rounds epoch seconds to bf_resolution: with time 0 at 10:00:40, a job
    # expected at 30 s (10:01:10) is held from 10:01:00, i.e. 20 s here
    space = NodeSpace(0.0, [0], 60.0, origin=40.0)
    space.hold([0], 30.0, 60.0)
    assert space.usable(0, 0.0, 19.5) and not space.usable(0, 19.0, 20.5)
    assert space.usable(0, 80.0, 90.0) and not space.usable(0, 79.0, 81.0)
    plain = NodeSpace(0.0, [0], 60.0)  # without an origin: held from 0 to 60
    plain.hold([0], 30.0, 60.0)
    assert not plain.usable(0, 0.0, 10.0) and plain.usable(0, 60.0, 70.0)


def test_fidelity_scheduler_parameters_replace_the_clusters() -> None:
    conf = "ClusterName=dev\nSchedulerParameters=bf_interval=5,sched_min_interval=200000\n"
    out = with_scheduler_parameters(conf, {"bf_interval": "1", "bf_resolution": "5"})
    assert out == (
        "ClusterName=dev\n"
        "SchedulerParameters=sched_min_interval=200000,bf_interval=1,bf_resolution=5\n"
    )
    assert with_scheduler_parameters("A=1\n", {"bf_interval": "1"}).endswith(
        "SchedulerParameters=bf_interval=1\n"
    )


def test_fidelity_settings_replace_or_precede_the_nodes() -> None:
    conf = "PriorityType=priority/basic\nA=1\nNodeName=cpu1 CPUs=8\n"
    out = with_settings(conf, {"PriorityType": "priority/multifactor", "PriorityMaxAge": "2"})
    assert out == (
        "PriorityType=priority/multifactor\nA=1\nPriorityMaxAge=2\nNodeName=cpu1 CPUs=8\n"
    )


def test_ctld_started_is_the_last_start() -> None:
    text = (
        "[2026-12-03T16:01:43.462] slurmctld version 22.05.8 started on cluster dev\n"
        "[2026-12-03T19:24:04.910] slurmctld version 22.05.8 started on cluster dev\n"
    )
    assert ctld_started(text) - ctld_started(text.splitlines()[0]) == pytest.approx(12141.448)

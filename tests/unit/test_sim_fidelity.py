"""The pure half of the simulator-vs-slurmctld comparison: the stream and the metrics."""

from __future__ import annotations

import pytest

from hpcorch.sim.fidelity import (
    agreement,
    completion_latency,
    noise_floor,
    simulate_starts,
    stream,
)


def test_stream_is_deterministic_and_fits_the_partition() -> None:
    jobs = stream(200, 16, seed=3)
    assert jobs == stream(200, 16, seed=3) and jobs != stream(200, 16, seed=4)
    assert all(1 <= j.cores <= 16 and j.limit_min in (1, 2, 3) for j in jobs)
    assert [j.offset_s for j in jobs] == sorted(j.offset_s for j in jobs)
    killed = sum(j.run_s > j.limit_min * 60 for j in jobs)
    assert 0 < killed < 0.15 * len(jobs)


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


def test_completion_latency_reads_whole_second_gaps() -> None:
    # job 1 starts 1 s after job 0's end, job 2 at the end of job 1, job 3 at its submit;
    # job 4 started 5 s after the last end (a backfill cycle): not a completion's latency
    submit = [0.0, 0.0, 0.0, 50.0, 0.0]
    start = [0.0, 11.0, 21.0, 50.0, 26.0]
    end = [10.0, 21.0, 30.0, 60.0, 40.0]
    assert completion_latency(submit, start, end) == pytest.approx(1 / 4)


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

"""Walltime sizing and worker fit (hpcorch.policies.walltime)."""

from __future__ import annotations

import random

import pytest

from hpcorch.policies.walltime import (
    WalltimeConfig,
    allocation_walltime,
    fits,
    needs_fresh_allocation,
    padded,
    round_up,
    span,
    walltime_for_tasks,
    winding_down,
)

CONFIG = WalltimeConfig()


def test_padded_adds_margin_and_uses_the_default_estimate() -> None:
    assert padded(100.0) == pytest.approx(170.0)  # 100 x 1.1 + 60
    assert padded(None) == pytest.approx(600 * 1.1 + 60)


def test_fits_keeps_margin_and_wind_down() -> None:
    # 100 s task: needs 170 s + 60 s wind-down = 230 s left
    assert fits(100.0, 230.0)
    assert not fits(100.0, 229.0)
    assert not fits(None, 600.0)
    assert fits(0.0, 120.0)


def test_winding_down() -> None:
    assert winding_down(60.0) and winding_down(0.0)
    assert not winding_down(61.0)


def test_needs_fresh_allocation_for_long_tasks() -> None:
    remaining = [300.0, 900.0, 1800.0]
    assert not needs_fresh_allocation(600.0, remaining)
    assert needs_fresh_allocation(3600.0, remaining)
    assert needs_fresh_allocation(10.0, [])


def test_span_bounds() -> None:
    assert span([], 4) == 0.0
    assert span([], 4, critical_path_s=50.0) == 50.0
    assert span([100.0], 8) == 100.0
    assert span([10.0] * 8, 8) == pytest.approx(10 + 10 * 7 / 8)
    assert span([10.0] * 8, 1) == 80.0
    assert span([10.0, 10.0], 4, critical_path_s=500.0) == 500.0


def test_span_is_an_upper_bound_of_greedy_dispatch() -> None:
    rng = random.Random(7)
    for _ in range(200):
        slots = rng.randint(1, 16)
        estimates = [rng.uniform(1, 1000) for _ in range(rng.randint(1, 60))]
        free = [0.0] * slots
        for estimate in estimates:  # greedy: each task to the first free slot
            i = free.index(min(free))
            free[i] += estimate
        assert max(free) <= span(estimates, slots) + 1e-6


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [
        (0, 300),
        (300, 300),
        (301, 600),
        (3000, 3600),
        (3601, 5400),
        (80000, 86400),
        (72 * 3600 + 1, 73 * 3600),
    ],
)
def test_round_up(seconds: float, bucket: float) -> None:
    assert round_up(seconds) == bucket


def test_allocation_walltime_rounds_pads_and_caps() -> None:
    # 1000 s of work: 1000 x 1.1 + 60 + 60 = 1220 -> 30 min bucket
    assert allocation_walltime(1000.0) == 1800.0
    assert allocation_walltime(1000.0, max_walltime_s=1200.0) == 1200.0
    assert allocation_walltime(0.0) == 300.0


def test_walltime_for_tasks_spreads_over_slots() -> None:
    short = walltime_for_tasks([600.0] * 16, slots=8, max_walltime_s=4 * 3600)
    serial = walltime_for_tasks([600.0] * 16, slots=1, max_walltime_s=4 * 3600)
    assert short < serial <= 4 * 3600
    # a long task sets the floor however many slots there are
    assert walltime_for_tasks([7000.0, 10.0], slots=64) >= 7000.0
    assert walltime_for_tasks([None], slots=1) == round_up(padded(None) + CONFIG.wind_down_s)


def test_allocation_walltime_fits_the_tasks_it_was_sized_for() -> None:
    rng = random.Random(3)
    for _ in range(100):
        estimates = [rng.uniform(1, 3000) for _ in range(rng.randint(1, 30))]
        walltime = walltime_for_tasks(estimates, slots=4)
        assert fits(max(estimates), walltime)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="ascending"):
        WalltimeConfig(buckets_s=(600.0, 300.0))
    with pytest.raises(ValueError, match="negative"):
        WalltimeConfig(margin_s=-1)

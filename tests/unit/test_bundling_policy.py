"""The bundling policy: who bundles, how large a bundle is."""

from __future__ import annotations

from hpcorch.policies.bundling import (
    BundleConfig,
    BundleStats,
    bundle_size,
    bundling_on,
    eligible,
    in_flight_limit,
    observe,
)

CFG = BundleConfig()


def _eligible(**kw: object) -> bool:
    base: dict[str, object] = dict(
        kind="function", mpi=False, switch=None, workflow_on=True, parents=0, children=0
    )
    base.update(kw)
    return eligible(**base)  # type: ignore[arg-type]


def test_on_by_default_only_for_large_workflows() -> None:
    assert not bundling_on(CFG.auto_threshold, None, CFG)
    assert bundling_on(CFG.auto_threshold + 1, None, CFG)
    assert not bundling_on(10**6, False, CFG)
    assert bundling_on(3, True, CFG)


def test_only_independent_plain_function_tasks_bundle() -> None:
    assert _eligible()
    assert _eligible(kind="command")
    assert not _eligible(kind="emulated")
    assert not _eligible(mpi=True)
    assert not _eligible(children=1)  # others wait for it: never held back
    assert not _eligible(parents=1)
    assert not _eligible(switch=False)
    assert not _eligible(workflow_on=False)
    assert _eligible(workflow_on=False, switch=True)


def test_starts_small_then_aims_at_the_target_duration() -> None:
    stats = BundleStats()
    assert bundle_size(stats, 100_000, 2, CFG) == CFG.first_size
    # 4 tasks of 1 ms: grows by at most `growth` per step, toward 1 s / 1 ms = 1000
    stats = observe(stats, 4, 0.004, CFG)
    assert bundle_size(stats, 100_000, 2, CFG) == 16
    sizes = []
    for _ in range(10):
        n = bundle_size(stats, 100_000, 2, CFG)
        sizes.append(n)
        stats = observe(stats, n, n * 0.001, CFG)
    assert sizes == sorted(sizes)
    assert sizes[-1] == 1000


def test_slow_tasks_run_alone() -> None:
    stats = observe(BundleStats(), 4, 20.0, CFG)  # 5 s a task
    assert bundle_size(stats, 1000, 2, CFG) == 1


def test_the_tail_is_spread_over_all_slots() -> None:
    stats = BundleStats(per_task_s=0.0001, largest=5000)
    assert bundle_size(stats, 100, 4, CFG) == 25
    assert bundle_size(stats, 3, 4, CFG) == 1
    assert bundle_size(stats, 0, 4, CFG) == 0
    assert bundle_size(stats, 10**6, 1, CFG) == CFG.max_size


def test_observations_are_smoothed() -> None:
    stats = observe(BundleStats(), 10, 1.0, CFG)
    assert stats.per_task_s == 0.1
    stats = observe(stats, 10, 0.0, CFG)
    assert abs((stats.per_task_s or 0) - 0.07) < 1e-9
    assert stats.largest == 10
    assert observe(stats, 0, 5.0, CFG) == stats


def test_in_flight_limit() -> None:
    assert in_flight_limit(0) == 8
    assert in_flight_limit(16) == 32

"""The live scaler loop with a fake Dask side, fake Slurm states and a hand-driven clock."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import hpcorch.provision.scaler as scaler_module
from hpcorch.journal import Journal as RunJournal
from hpcorch.options import ScalerSettings
from hpcorch.policies.scale import ScaleConfig, Submit
from hpcorch.policies.state import (
    Budget,
    PoolShape,
    Resources,
    SiteQueue,
    charge_rates,
    parse_budget,
    site_limits,
)
from hpcorch.provision.horizon import CAPACITY, restriction, tier_name, tiers
from hpcorch.provision.regions import Router, parse_test_only, probe_queue
from hpcorch.provision.scaler import Load, Scaler
from hpcorch.provision.slurm_pool import _JournalDemand
from hpcorch.sites import load_site
from hpcorch.slurm.cli import Completed
from hpcorch.slurm.models import JobInfo
from hpcorch.slurm.states import JobState
from hpcorch.spec import parse_workflow


@dataclass
class FakeRuntime:
    """Jobs start when the test says; workers are busy when the test says."""

    submitted: list[tuple[str, float]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    workers: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    resources: dict[str, dict[str, float]] = field(default_factory=dict)

    def submit(self, pool: str, names: Sequence[str], walltime_s: float) -> dict[str, str | None]:
        ids = {}
        for name in names:
            self.submitted.append((name, walltime_s))
            ids[name] = str(100 + len(self.submitted))
        return ids

    def release(self, names: Sequence[str]) -> None:
        for name in names:
            self.released.append(name)
            self.workers.pop(name, None)

    def busy(self) -> dict[str, tuple[str, int, int]]:
        return dict(self.workers)

    def set_resources(self, address: str, resources: dict[str, float]) -> None:
        self.resources[address] = resources


class FakeStates:
    def __init__(self) -> None:
        self.jobs: dict[str, JobInfo] = {}

    def watch(self, site: str, job_ids: Iterable[str]) -> None:
        for j in job_ids:
            self.jobs.setdefault(j, JobInfo(j, JobState.PENDING))

    def job(self, site: str, job_id: str) -> JobInfo | None:
        return self.jobs.get(job_id)

    def close(self) -> None:
        pass


class Journal:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.rows: list[dict[str, Any]] = []

    def event(self, kind: str, **payload: Any) -> None:
        self.events.append((kind, payload))

    def record_allocation(self, **alloc: Any) -> None:
        self.rows.append(alloc)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    loads: list[Load], **config: Any
) -> tuple[Scaler, FakeRuntime, FakeStates, Journal, Clock]:
    site = load_site("dev")
    runtime, states, journal, clock = FakeRuntime(), FakeStates(), Journal(), Clock()
    shape = PoolShape("cpu", "dev", "cpu", max_allocations=2)
    router = Router({"dev": site}, {("dev", "cpu"): "cpu"})
    settings = ScalerSettings(2.0, ScaleConfig(**{"idle_timeout_s": 10, "cooldown_s": 5, **config}))
    scaler = Scaler(
        [(shape, charge_rates(site, "cpu"))],
        {"dev": site_limits(site)},
        runtime,
        states,
        lambda: loads,
        router,
        journal=journal,
        settings=settings,
        clock=clock,
    )
    return scaler, runtime, states, journal, clock


def short(i: int, running: bool = False) -> Load:
    return Load(f"t{i}", Resources(cpus=1), 3.0, running, (("dev", "cpu"),))


def start_all(runtime: FakeRuntime, states: FakeStates, clock: Clock) -> None:
    for n, (name, _) in enumerate(runtime.submitted):
        job_id = str(101 + n)
        states.jobs[job_id] = JobInfo(job_id, JobState.RUNNING, start=clock.now)
        if name not in runtime.released:
            runtime.workers[name] = (f"tcp://w{n}", 4, 0)


def test_from_zero_to_the_partition_and_back_to_zero_without_thrashing() -> None:
    loads = [short(i) for i in range(200)]
    scaler, runtime, states, journal, clock = make(loads)
    assert scaler.step().submits[0].count == 2  # the partition's two nodes at once
    start_all(runtime, states, clock)
    for _ in range(10):  # the burst runs: nothing more is asked, nothing released
        clock.now += 2
        assert scaler.step().empty
    loads.clear()  # the last task ended: the workers go idle
    for name in runtime.workers:
        runtime.workers[name] = (runtime.workers[name][0], 0, 0)
    idle_at = clock.now
    released_at = None
    while released_at is None:
        clock.now += 2
        if scaler.step().releases:
            released_at = clock.now
    assert sorted(runtime.released) == ["cpu-1", "cpu-2"]
    # first seen idle one interval after it was, released at the idle timeout from there
    assert released_at <= idle_at + 10 + 2 * 2
    actions = [p["action"] for k, p in journal.events if k == "scale"]
    assert actions == ["submit", "release", "release"]
    assert all(p["reason"] for k, p in journal.events if k == "scale")
    final = scaler.finish()
    assert final["allocations_submitted"] == 2
    assert final["total"]["core_hours_allocated"] > 0


def test_walltime_tiers_shrink_as_the_allocation_runs_out() -> None:
    loads = [short(i) for i in range(8)]
    scaler, runtime, states, journal, clock = make(loads)
    scaler.step()
    (_name, walltime), *_ = runtime.submitted
    assert walltime == 300  # a short burst asks for the smallest bucket
    start_all(runtime, states, clock)
    scaler.step()
    assert runtime.resources == {}  # it started with the tiers of its walltime
    clock.now += 100  # 200 s left: no 120 s task fits (x 1.1 + 60 margin + 60 wind-down)
    scaler.step()
    (pushed,) = runtime.resources.values()
    assert pushed[tier_name(60)] == CAPACITY and pushed[tier_name(120)] == 0.0
    assert any(k == "scale" and p["action"] == "tiers" for k, p in journal.events)


def test_a_worker_holding_results_still_needed_drains_before_it_goes() -> None:
    loads = [short(i) for i in range(8)]
    scaler, runtime, states, journal, clock = make(loads)
    scaler.step()
    start_all(runtime, states, clock)
    scaler.step()
    # the burst is done; a long task waits for its results, which only cpu-1 holds
    loads[:] = [Load("long", Resources(cpus=1), 600.0, False, (("dev", "cpu"),))]
    runtime.workers["cpu-1"] = ("tcp://w0", 0, 8)
    clock.now += 2
    plan = scaler.step()
    assert [r.allocation for r in plan.releases] == ["cpu-1"]  # too little time left for it
    assert runtime.released == [] and "cpu-1" in scaler.draining
    assert plan.submits and plan.submits[0].walltime_s >= 900  # a fresh one, long enough
    runtime.workers["cpu-2"] = ("tcp://w1", 0, 0)  # the fresh one connects
    clock.now += 2
    scaler.step()
    assert runtime.released == ["cpu-1"] and not scaler.draining
    kinds = [p["action"] for k, p in journal.events if k == "scale"]
    assert kinds.index("drain") < kinds.index("release")


def test_tiers_and_restrictions() -> None:
    assert restriction(3.0) == {"time_30": 1.0}
    assert restriction(None) == {"time_600": 1.0}  # the default estimate
    assert restriction(10**7) == {}
    have = tiers(300)
    assert have["time_120"] == CAPACITY and have["time_300"] == 0.0
    assert not any(tiers(50).values())  # winding down: nothing new starts


def test_budget_holds_and_trims_submissions() -> None:
    site = load_site("dev")  # 1 SU per node-hour: a 5-minute node is 1/12 SU
    router = Router({"dev": site}, {("dev", "cpu"): "cpu"}, budget=Budget(0.1))

    count, note = router.affordable(Submit("cpu", 2, 1, 300.0, "x"), [], 0.0)
    assert count == 1 and "raise the run's budget" in note
    assert router.hold([], 0.0) is None


def test_region_route_prefers_the_site_that_finishes_sooner_for_the_money() -> None:
    dev = load_site("dev")
    dear = dev.model_copy(
        update={"name": "dear", "charge": dev.charge.model_copy(update={"su_per_node_hour": 5})}
    )
    queues = {
        "dev": SiteQueue("dev", 2, idle_nodes=0, slurm_start_s=3600, cores_per_node=8),
        "dear": SiteQueue("dear", 2, idle_nodes=2, cores_per_node=8),
    }
    router = Router(
        {"dev": dev, "dear": dear},
        {("dev", "cpu"): "cpu", ("dear", "cpu"): "dear.cpu"},
        probe=lambda s, p, now: queues[s.name],
    )
    both = (("dev", "cpu"), ("dear", "cpu"))
    assert router.route(Load("a", Resources(cpus=1), 60.0, candidates=both), 0.0) == "dear.cpu"
    queues["dev"] = SiteQueue("dev", 2, idle_nodes=2, cores_per_node=8)
    router._probes.clear()
    # both idle: the cheaper one; the first choice stays (sticky)
    assert router.route(Load("b", Resources(cpus=1), 60.0, candidates=both), 0.0) == "cpu"
    assert router.route(Load("a", Resources(cpus=1), 60.0, candidates=both), 0.0) == "dear.cpu"


def test_parsers() -> None:
    assert parse_budget("12.5") == Budget(12.5, "SU")
    assert parse_budget("3 eur") == Budget(3.0, "EUR")
    with pytest.raises(ValueError, match="amount and a unit"):
        parse_budget("lots")
    now = datetime(2026, 11, 25, 19, 0, 0).timestamp()
    line = "sbatch: Job 365 to start at 2026-11-25T19:10:00 using 8 processors on nodes cpu1"
    assert parse_test_only(line, now) == 600.0
    assert parse_test_only("sbatch: error: nothing", now) is None


DATA = Path(__file__).parent / "data" / "slurm-22.05"


def test_probe_queue_reads_idle_nodes_pending_work_and_slurms_start_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLURM_JWT", "secret")
    site = load_site("dev")
    squeue = (DATA / "squeue.json").read_text()
    sinfo = json.loads((DATA / "sinfo.json").read_text())
    calls: list[tuple[list[str], dict[str, str]]] = []

    def runner(argv: list[str], stdin: str | None, env: dict[str, str], timeout: float) -> Any:
        calls.append((argv, env))
        out = {"squeue": squeue, "sinfo": json.dumps(sinfo)}.get(argv[0], "")
        err = (
            "sbatch: Job 9 to start at 2026-11-25T19:10:00 using 8 processors"
            if argv[0] == "sbatch"
            else ""
        )
        return Completed(0, out, err)

    now = datetime(2026, 11, 25, 19, 0, 0).timestamp()
    idle = probe_queue(site, site.partition("cpu"), 600, now=now, runner=runner)
    assert (idle.idle_nodes, idle.pending_node_s, idle.slurm_start_s) == (2, 60.0, None)
    assert [argv[0] for argv, _ in calls] == ["squeue", "sinfo"]  # idle nodes: no estimate needed
    for node in sinfo["nodes"]:
        node["state"] = "allocated"
    calls.clear()
    busy = probe_queue(site, site.partition("cpu"), 600, now=now, runner=runner)
    assert busy.idle_nodes == 0 and busy.slurm_start_s == 600.0
    argv, env = calls[-1]
    assert argv[:2] == ["sbatch", "--test-only"] and "--time=10" in argv
    assert "SLURM_JWT" not in env


def test_journal_demand_counts_a_fan_out_with_its_short_parent(tmp_path: Path) -> None:

    def task(tid: str, seconds: float, *after: str) -> dict[str, Any]:
        return {"id": tid, "after": list(after), "duration": seconds}

    spec = parse_workflow(
        {
            "name": "fan",
            "tasks": [
                task("split", 1),
                *(task(f"part{i}", 2, "split") for i in range(3)),
                task("merge", 1, *(f"part{i}" for i in range(3))),
                task("slow", 3600),
                task("after-slow", 1, "slow"),
            ],
        }
    )
    journal = RunJournal.create(
        tmp_path, run_id="r", name="fan", source=None, site="dev", time_scale=None
    )
    journal.add_tasks((t.id, "command", "pending", 0) for t in spec.tasks)
    journal.set_states([("slow", "running")])
    journal.flush()
    demand = _JournalDemand(spec, tmp_path, [load_site("dev")])

    def loads() -> dict[str, bool]:
        return {load.task_id: load.running for load in demand()}

    # split is ready, its parts come right after it (one level, short parent); merge is two
    # levels away and after-slow waits on an hour-long task
    assert loads() == {"split": False, "part0": False, "part1": False, "part2": False,
                       "slow": True}  # fmt: skip
    journal.set_states([("split", "succeeded"), ("part0", "running")])
    journal.flush()
    assert loads() == {"part0": True, "part1": False, "part2": False, "merge": False,
                       "slow": True}  # fmt: skip
    journal.close()


def test_kick_steps_at_once_instead_of_waiting_out_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    monkeypatch.setattr(scaler_module, "FIRST_STEP_S", 60.0)  # no step but the first by itself
    loads: list[Load] = []
    scaler, runtime, _, _, _ = make(loads)
    scaler.settings = ScalerSettings(60.0, scaler.settings.scale)
    scaler.start()
    try:
        time.sleep(0.3)  # the first step found nothing queued
        assert not runtime.submitted
        loads.extend(short(i) for i in range(16))
        scaler.kick()
        deadline = time.monotonic() + 5
        while not runtime.submitted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runtime.submitted, "the kicked step did not submit"
    finally:
        scaler.stop()


def test_observed_waits_reach_the_pools_demand() -> None:
    scaler, runtime, states, _, clock = make([short(i) for i in range(60)])
    scaler.step()
    assert len(runtime.submitted) == 2
    demand, _ = scaler._pool_demand(clock.now)
    assert demand["cpu"].expected_wait_s == 0.0  # nothing started yet
    clock.now += 100
    start_all(runtime, states, clock)
    scaler.step()  # the router sees both allocations start, 100 s after their submission
    demand, _ = scaler._pool_demand(clock.now)
    assert demand["cpu"].expected_wait_s == pytest.approx(100.0)


def test_slurms_start_corrects_the_start_seen_when_the_worker_connected_first() -> None:
    scaler, runtime, states, journal, clock = make([short(i) for i in range(8)])
    scaler.step()
    (name, _), job_id = runtime.submitted[0], "101"
    clock.now += 5
    runtime.workers[name] = ("tcp://w0", 4, 0)  # connected; the poll has not seen it run
    scaler.step()
    assert scaler.lives[name].start == clock.now
    states.jobs[job_id] = JobInfo(job_id, JobState.RUNNING, start=clock.now - 4)
    scaler.step()
    # attempts are clipped to their allocation: a late start would cut their used hours
    assert scaler.lives[name].start == clock.now - 4
    assert journal.rows[-1]["start"] == clock.now - 4

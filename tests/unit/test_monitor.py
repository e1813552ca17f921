"""The run monitor: one batched Slurm poll per interval, Dask workers, events out."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from hpcorch.engine.monitor import AllocationEvent, Monitor, MonitorEvent, NodeEvent, WorkerEvent
from hpcorch.journal import JOURNAL_NAME, Journal, status
from hpcorch.slurm.fake import FakeSlurm
from hpcorch.slurm.script import JobRequest
from hpcorch.slurm.states import JobState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeDask:
    """The two calls the monitor makes to a Dask client."""

    def __init__(self) -> None:
        self.workers: dict[str, dict[str, Any]] = {}
        self.where: dict[str, dict[str, str | None]] = {}
        self.calls = {"scheduler_info": 0, "run": 0}

    def scheduler_info(self, n_workers: int = -1) -> dict[str, Any]:
        self.calls["scheduler_info"] += 1
        return {"workers": dict(self.workers)}

    def run(self, fn: Any, workers: list[str], on_error: str) -> dict[str, Any]:
        self.calls["run"] += 1
        return {a: self.where[a] for a in workers}


def _events(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    conn = sqlite3.connect(run_dir / JOURNAL_NAME)
    try:
        rows = conn.execute("SELECT kind, payload FROM events ORDER BY id").fetchall()
    finally:
        conn.close()
    return [(kind, json.loads(payload)) for kind, payload in rows]


def _journal(tmp_path: Path) -> Journal:
    return Journal.create(tmp_path, run_id="r1", name="t", source=None, site="dev", time_scale=None)


def test_one_jobs_call_per_tick_whatever_the_allocations_nodes_when_jobs_change(
    tmp_path: Path,
) -> None:
    fake = FakeSlurm()
    client = fake.client()
    ids = [client.submit(JobRequest(command="sleep 1", partition="cpu")) for _ in range(50)]
    journal = _journal(tmp_path)
    monitor = Monitor(journal, slurm=client, interval_s=1, clock=Clock())
    seen: list[MonitorEvent] = []
    monitor.subscribe(seen.append)
    monitor.watch_allocations({"job_id": j, "site": "dev", "pool": "cpu"} for j in ids)
    fake.calls.clear()
    for _ in range(3):
        monitor.tick()
        monitor._next_slurm = 0  # every tick polls here
    # nodes with the first sight of the jobs; not again until a job changes (or a few polls)
    assert fake.calls == {"jobs": 3, "nodes": 1}
    assert sum(isinstance(e, AllocationEvent) for e in seen) == 50  # first sight only
    assert not any(isinstance(e, NodeEvent) for e in seen)  # healthy nodes are not news

    fake.start(ids[0], "cpu2")
    fake.fail_node("cpu2")
    monitor.tick()
    journal.flush()
    last = [e for e in seen if isinstance(e, AllocationEvent)][-1]
    assert last.job.job_id == ids[0] and last.job.state is JobState.NODE_FAIL
    assert monitor.node_healthy("cpu2") is False and monitor.node_healthy("cpu1") is True
    assert monitor.node_healthy("nowhere") is None
    assert monitor.unhealthy_nodes() == {"cpu2"}
    allocs = {a["job_id"]: a for a in status(tmp_path)["allocations"]}
    assert allocs[ids[0]]["state"] == "NODE_FAIL" and allocs[ids[0]]["site"] == "dev"
    kinds = [k for k, _ in _events(tmp_path)]
    assert "node" in kinds and kinds.count("allocation") == 51
    journal.close()


def test_slurm_away_backs_off_and_the_workers_are_still_watched(tmp_path: Path) -> None:
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="sleep 1"))
    clock = Clock()
    dask = FakeDask()
    monitor = Monitor(None, slurm=client, dask_client=dask, interval_s=5, clock=clock)
    monitor.watch_allocations([job])
    monitor.tick()
    fake.down = True  # slurmctld restarting
    fake.calls.clear()
    for _ in range(4):
        clock.now += 5
        monitor.tick()
    # backed off: 10 s after the first failure, so not every 5 s tick asked
    assert 1 <= fake.calls["jobs"] < 4
    assert dask.calls["scheduler_info"] == 5
    fake.down = False
    clock.now += 60
    monitor.tick()
    assert monitor.allocation(job) is not None


def test_lost_and_joined_workers_with_their_node_and_job(tmp_path: Path) -> None:
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="dask worker"))
    fake.start(job, "cpu1")
    journal = _journal(tmp_path)
    dask = FakeDask()
    dask.workers["tls://10.0.0.1:1"] = {"name": "cpu-0", "last_seen": 1000.0}
    dask.where["tls://10.0.0.1:1"] = {"node": "cpu1", "job_id": job}
    clock = Clock()
    monitor = Monitor(journal, slurm=client, dask_client=dask, clock=clock)
    seen: list[MonitorEvent] = []
    unsubscribe = monitor.subscribe(seen.append)
    monitor.tick()
    # the worker's job was learned from the worker itself and is now followed
    assert monitor.allocation_ids() == [job]
    assert monitor.allocation(job) is not None
    assert [w.node for w in monitor.live_workers()] == ["cpu1"]
    del dask.workers["tls://10.0.0.1:1"]
    clock.now += 5
    monitor.tick()
    lost = [e for e in seen if isinstance(e, WorkerEvent) and e.change == "lost"]
    assert len(lost) == 1 and lost[0].worker.node == "cpu1" and lost[0].worker.job_id == job
    info = monitor.worker("tls://10.0.0.1:1")
    assert info is not None and info.lost == clock.now
    assert monitor.live_workers() == []
    assert dask.calls["run"] == 1  # one question per batch of new workers

    dask.workers["tls://10.0.0.1:2"] = {"name": "cpu-1", "last_seen": 900.0}
    dask.where["tls://10.0.0.1:2"] = {"node": "cpu2", "job_id": None}
    clock.now += 5
    unsubscribe()
    monitor.tick()
    journal.flush()
    assert len(seen) == 3  # nothing after unsubscribing
    kinds = [k for k, _ in _events(tmp_path)]
    assert kinds.count("worker_joined") == 2 and "worker_lost" in kinds
    assert "worker_silent" in kinds  # last seen 110 s ago
    journal.close()


def test_a_watcher_that_raises_does_not_stop_the_others() -> None:
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="true"))
    monitor = Monitor(None, slurm=client)
    got: list[MonitorEvent] = []

    def broken(event: MonitorEvent) -> None:
        raise RuntimeError("boom")

    monitor.subscribe(broken)
    monitor.subscribe(got.append)
    monitor.watch_allocations([job, "cpu-0"])  # a name, not a Slurm id: ignored
    monitor.tick()
    assert len(got) == 1


def test_a_worker_known_from_its_attempt_records_is_placed_even_if_it_dies_first() -> None:
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="dask worker"))
    dask = FakeDask()
    monitor = Monitor(None, slurm=client, dask_client=dask)
    monitor.saw([{"worker": "tls://w9", "node": "cpu2", "job_id": job, "task_id": "t"}])
    assert monitor.allocation_ids() == [job]
    dask.workers["tls://w9"] = {"name": "cpu-0"}
    monitor.tick()
    assert dask.calls["run"] == 0  # already placed: not asked again
    del dask.workers["tls://w9"]
    monitor.tick()
    info = monitor.worker("tls://w9")
    assert info is not None and info.node == "cpu2" and info.lost is not None
    # the scaler's AllocationStates protocol
    monitor.watch("dev", [job])
    assert monitor.job("dev", job) is not None


class _FlakyRun(FakeDask):
    """The first ``client.run`` to a new worker fails (its connection dropped), as
    seen on 26.05 while a just-started worker's event loop was busy."""

    def run(self, fn: Any, workers: list[str], on_error: str) -> dict[str, Any]:
        self.calls["run"] += 1
        if self.calls["run"] == 1:
            return {a: OSError("broadcast failed: BrokenPipeError") for a in workers}
        return {a: self.where[a] for a in workers}


def test_a_worker_whose_first_whoami_failed_is_asked_again_and_placed() -> None:
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="dask worker"))
    dask = _FlakyRun()
    monitor = Monitor(None, slurm=client, dask_client=dask)
    dask.workers["tls://w1"] = {"name": "cpu-1"}
    dask.where["tls://w1"] = {"node": "cpu2", "job_id": job, "site": None}
    monitor.tick()
    info = monitor.worker("tls://w1")
    assert info is not None and info.node is None  # the answer was lost
    monitor.tick()
    info = monitor.worker("tls://w1")
    assert info is not None and info.node == "cpu2" and info.job_id == job
    assert monitor.allocation_ids() == [job]
    monitor.tick()
    assert dask.calls["run"] == 2  # placed: not asked a third time


def test_attempt_records_place_a_worker_that_joined_unplaced() -> None:
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="dask worker"))
    dask = _FlakyRun()
    monitor = Monitor(None, slurm=client, dask_client=dask)
    dask.workers["tls://w1"] = {"name": "cpu-1"}
    monitor.tick()
    monitor.saw([{"worker": "tls://w1", "node": "cpu2", "job_id": job, "task_id": "t"}])
    info = monitor.worker("tls://w1")
    assert info is not None and info.node == "cpu2" and info.job_id == job
    assert info.name == "cpu-1" and info.joined is not None
    assert monitor.allocation_ids() == [job]

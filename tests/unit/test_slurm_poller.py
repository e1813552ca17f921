"""The fake cluster, the fallback chain and the poller (one call per interval, backoff)."""

from __future__ import annotations

import logging
import threading

import pytest

from hpcorch.errors import SlurmError, SubmissionRefused
from hpcorch.slurm.client import BackendDown
from hpcorch.slurm.fake import FakeSlurm
from hpcorch.slurm.fallback import FallbackClient
from hpcorch.slurm.poller import JobUpdate, NodeUpdate, PollCore, Poller, Update
from hpcorch.slurm.script import JobRequest
from hpcorch.slurm.states import FailureClass, JobState


def test_fake_drives_states() -> None:
    fake = FakeSlurm()
    client = fake.client()
    a = client.submit(JobRequest(command="true", partition="gpu"))
    assert client.jobs([a])[0].state is JobState.PENDING
    fake.start(a, "gpu2")
    fake.fail_node("gpu2")
    job = client.jobs([a])[0]
    assert job.state is JobState.NODE_FAIL and job.failure is FailureClass.NODE_FAILURE
    assert {n.name: n.failed for n in client.nodes()}["gpu2"]
    with pytest.raises(SubmissionRefused):
        client.submit(JobRequest(command="true", partition="nope"))
    fake.down = True
    with pytest.raises(BackendDown):
        client.jobs([a])


class Recorder:
    def __init__(self) -> None:
        self.updates: list[Update] = []

    def __call__(self, update: Update) -> None:
        self.updates.append(update)


def test_poller_makes_one_jobs_call_per_poll_for_many_jobs() -> None:
    fake = FakeSlurm()
    client = fake.client()
    ids = [client.submit(JobRequest(command="true")) for _ in range(200)]
    poller = Poller(client, interval_s=1)
    watchers = [Recorder() for _ in range(4)]
    for i, rec in enumerate(watchers):
        poller.subscribe(rec, ids[i * 50 : (i + 1) * 50])
    fake.calls.clear()
    for _ in range(3):
        assert poller.poll_once()
    assert fake.calls == {"jobs": 3}
    assert all(len(rec.updates) == 50 for rec in watchers)  # first sight of each job
    fake.start(ids[0], "cpu1")
    fake.finish(ids[60], exit_code=3)
    poller.poll_once()
    assert [u.job.state for u in watchers[0].updates[50:]] == [JobState.RUNNING]
    last = watchers[1].updates[-1]
    assert isinstance(last, JobUpdate) and last.job.exit_code == 3
    assert last.previous is not None and last.previous.state is JobState.PENDING
    # Ended jobs are no longer asked for.
    assert ids[60] not in poller.core.wanted_jobs()


def test_poller_fans_out_node_updates_to_node_watchers_only() -> None:
    fake = FakeSlurm()
    poller = Poller(fake.client(), interval_s=1)
    jobs_only, nodes_too = Recorder(), Recorder()
    poller.subscribe(jobs_only, [])
    poller.subscribe(nodes_too, nodes=True)
    poller.poll_once()
    fake.fail_node("gpu1")
    for _ in range(poller.core.node_every):  # no job changed: nodes within node_every polls
        poller.poll_once()
    assert jobs_only.updates == []
    changed = [u for u in nodes_too.updates[4:] if isinstance(u, NodeUpdate)]
    assert [u.node.name for u in changed] == ["gpu1"] and changed[0].node.failed


def test_backoff_when_slurm_is_down_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="true"))
    poller = Poller(client, interval_s=2, max_interval_s=30)
    poller.subscribe(Recorder(), [job])
    fake.down = True
    delays = []
    with caplog.at_level(logging.WARNING):
        for _ in range(6):
            assert not poller.poll_once()
            delays.append(poller.core.delay())
    assert delays == [4, 8, 16, 30, 30, 30]
    assert len([r for r in caplog.records if "backing off" in r.message]) == 1
    fake.down = False
    assert poller.poll_once()
    assert poller.core.delay() == 2


def test_slow_answers_back_off_too() -> None:
    core = PollCore(interval_s=5, max_interval_s=60, slow_s=5)
    core.apply([], None, took_s=9)
    assert core.delay() == 10
    core.apply([], None, took_s=1)
    assert core.delay() == 5


def test_fallback_switches_once_logs_once_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeSlurm()
    primary, secondary = fake.client(), fake.client()
    primary.name = "rest"  # type: ignore[misc]
    broken = {"on": False}
    original = primary.jobs

    def flaky_jobs(ids):  # type: ignore[no-untyped-def]
        if broken["on"]:
            raise BackendDown("slurmrestd at http://x unreachable")
        return original(ids)

    primary.jobs = flaky_jobs  # type: ignore[method-assign]
    client = FallbackClient([primary, secondary], recheck_s=1e9)
    job = client.submit(JobRequest(command="true"))
    poller = Poller(client, interval_s=1)
    rec = Recorder()
    poller.subscribe(rec, [job])
    poller.poll_once()
    broken["on"] = True
    with caplog.at_level(logging.WARNING):
        fake.start(job, "cpu1")
        poller.poll_once()
        fake.finish(job, 0)
        poller.poll_once()
        poller.poll_once()
    states = [u.job.state for u in rec.updates if isinstance(u, JobUpdate)]
    assert states == [JobState.PENDING, JobState.RUNNING, JobState.COMPLETED]
    assert client.name == "fake" and client.fallbacks == 1
    assert len([r for r in caplog.records if "falling back" in r.message]) == 1


def test_fallback_never_resubmits_a_delivered_job() -> None:
    fake = FakeSlurm()
    primary, secondary = fake.client(), fake.client()

    def timed_out(job):  # type: ignore[no-untyped-def]
        raise SlurmError("slurmrestd POST /job/submit: ReadTimeout")

    primary.submit = timed_out  # type: ignore[method-assign]
    client = FallbackClient([primary, secondary])
    with pytest.raises(SlurmError, match="ReadTimeout"):
        client.submit(JobRequest(command="true"))
    assert fake.jobs == {}


def test_fallback_recovers_to_the_preferred_backend() -> None:
    now = [0.0]
    fake = FakeSlurm()
    primary, secondary = fake.client(), fake.client()
    primary.name = "rest"  # type: ignore[misc]
    down = {"on": True}
    original = primary.nodes

    def nodes(partitions=None):  # type: ignore[no-untyped-def]
        if down["on"]:
            raise BackendDown("down")
        return original(partitions)

    primary.nodes = nodes  # type: ignore[method-assign]
    client = FallbackClient([primary, secondary], recheck_s=60, clock=lambda: now[0])
    client.nodes()
    assert client.name == "fake"
    down["on"] = False
    now[0] = 61
    client.nodes()
    assert client.name == "rest"


def test_poller_thread_delivers_until_stopped() -> None:

    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="true"))
    done = threading.Event()

    def watcher(update: Update) -> None:
        if isinstance(update, JobUpdate) and update.job.terminal:
            done.set()

    poller = Poller(client, interval_s=0.01)
    poller.subscribe(watcher, [job])
    poller.start()
    try:
        fake.start(job, "cpu1")
        fake.finish(job, 0)
        assert done.wait(5)
    finally:
        poller.stop()
    assert poller.job(job) is not None and poller.job(job).state is JobState.COMPLETED  # type: ignore[union-attr]


def test_nodes_only_for_the_partitions_of_the_watched_jobs() -> None:
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="true", partition="gpu"))
    poller = Poller(client, interval_s=1)
    rec = Recorder()
    sub = poller.subscribe(rec, [], nodes=True)
    fake.calls.clear()
    poller.poll_once()
    assert fake.calls == {}  # no job yet: nothing to ask
    poller.watch(sub, [job])
    poller.poll_once()
    nodes = {u.node.name for u in rec.updates if isinstance(u, NodeUpdate)}
    assert nodes == {"gpu1", "gpu2"}
    assert fake.calls == {"jobs": 1, "nodes": 1}


def test_quiet_polls_stretch_the_interval_and_a_change_snaps_it_back() -> None:
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="true"))
    poller = Poller(client, interval_s=2, max_interval_s=60, idle_max_s=16)
    sub = poller.subscribe(Recorder(), [job])
    delays = []
    for _ in range(7):
        poller.poll_once()
        delays.append(poller.core.delay())
    assert delays == [2, 2, 2, 4, 8, 16, 16]  # first sight, two quiet at base, then doubling
    fake.start(job, "cpu1")
    poller.poll_once()
    assert poller.core.delay() == 2
    for _ in range(3):
        poller.poll_once()
    assert poller.core.delay() == 4
    other = client.submit(JobRequest(command="true"))
    poller.watch(sub, [other])  # a newly watched job: back to the base interval
    assert poller.core.delay() == 2


def test_nodes_on_a_job_change_else_every_few_polls() -> None:
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="true", partition="gpu"))
    poller = Poller(client, interval_s=1)
    poller.subscribe(Recorder(), [job], nodes=True)
    fake.calls.clear()
    asked = []
    for n in range(9):
        if n == 5:
            fake.start(job, "gpu1")
        before = fake.calls["nodes"]
        poller.poll_once()
        asked.append(fake.calls["nodes"] - before)
    assert fake.calls["jobs"] == 9
    # first sight, then every 4th poll, and the poll that saw the job start
    assert asked == [1, 0, 0, 0, 1, 1, 0, 0, 0]

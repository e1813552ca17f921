"""Resume and cancel: the run's allocations left in Slurm are cancelled, none twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcorch.engine.cancel import cancel_allocations
from hpcorch.journal import Journal, status
from hpcorch.sites.resolve import resolve_site
from hpcorch.slurm.fake import FakeSlurm
from hpcorch.slurm.script import JobRequest
from hpcorch.slurm.states import JobState


def test_only_the_allocations_still_in_slurm_are_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSlurm()
    client = fake.client()
    running, done, closed = (client.submit(JobRequest(command="w")) for _ in range(3))
    fake.start(running, "cpu1")
    fake.start(done, "cpu2")
    fake.finish(done)
    monkeypatch.setattr("hpcorch.engine.cancel.connect", lambda site: fake.client())
    journal = Journal.create(
        tmp_path, run_id="r", name="r", source=None, site="dev", time_scale=None
    )
    for job, state in ((running, "RUNNING"), (done, "PENDING"), (closed, "CLOSED")):
        journal.record_allocation(
            job_id=job,
            site="dev",
            partition="cpu",
            nodes=1,
            state=state,
            start=1.0,
            end=None,
            pool="cpu",
        )
    fake.calls.clear()
    cancelled = cancel_allocations(tmp_path, resolve_site("dev"), journal, why="resume")
    journal.flush()
    assert cancelled == [running]
    assert fake.jobs[running].state is JobState.CANCELLED
    assert fake.calls == {"jobs": 1, "cancel": 1}  # one query, one cancel
    rows = {a["job_id"]: a for a in status(tmp_path)["allocations"]}
    assert rows[running]["state"] == "CANCELLED" and rows[running]["end"] is not None
    assert rows[done]["state"] == "ENDED" and rows[closed]["state"] == "CLOSED"
    # a second call finds nothing left to do
    fake.calls.clear()
    assert cancel_allocations(tmp_path, resolve_site("dev"), journal, why="cancel") == []
    assert not fake.calls
    journal.close()


def test_each_sites_jobs_are_cancelled_on_that_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Job ids are per cluster: dev2's job 1 is not dev's job 1, and each is cancelled
    # through its own site's Slurm; a site the run cannot resolve is skipped, not guessed.
    fakes = {"dev": FakeSlurm(), "dev2": FakeSlurm()}
    jobs = {}
    for name, fake in fakes.items():
        jobs[name] = fake.client().submit(JobRequest(command="w"))
        fake.start(jobs[name], "cpu1")
    assert jobs["dev"] == jobs["dev2"]
    monkeypatch.setattr("hpcorch.engine.cancel.connect", lambda site: fakes[site.name].client())
    dev2 = resolve_site("dev").model_copy(update={"name": "dev2"})
    monkeypatch.setattr(
        "hpcorch.engine.cancel.resolve_site",
        lambda name: dev2 if name == "dev2" else resolve_site(name),
    )
    journal = Journal.create(
        tmp_path, run_id="r", name="r", source=None, site="dev", time_scale=None
    )
    for name in ("dev", "dev2", "gone"):
        journal.record_allocation(job_id=jobs["dev"], site=name, state="RUNNING", start=1.0,
                                  pool="cpu")  # fmt: skip
    assert cancel_allocations(tmp_path, resolve_site("dev"), journal, why="cancel") == [
        jobs["dev"],
        jobs["dev2"],
    ]
    journal.close()
    assert all(fake.jobs[jobs[n]].state is JobState.CANCELLED for n, fake in fakes.items())
    assert sorted((a["site"], a["state"]) for a in status(tmp_path)["allocations"]) == [
        ("dev", "CANCELLED"),
        ("dev2", "CANCELLED"),
        ("gone", "RUNNING"),  # no site called 'gone': left as it was, with a warning
    ]


def test_local_runs_have_nothing_to_cancel(tmp_path: Path) -> None:
    journal = Journal.create(
        tmp_path, run_id="r", name="r", source=None, site="local", time_scale=None
    )
    assert cancel_allocations(tmp_path, resolve_site("local"), journal, why="resume") == []
    journal.close()

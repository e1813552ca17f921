"""One driver per run (issue 19): the run directory's lock, and ``cancel`` signalling
only the process that holds it, never a pid alone."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcorch.engine import cancel, session
from hpcorch.engine.driverlock import LOCK_NAME, DriverLock, Holder, holder_alive, live_driver
from hpcorch.errors import RunLocked
from hpcorch.guardian import start_ticks
from hpcorch.journal import Journal
from hpcorch.slurm.fake import FakeSlurm
from hpcorch.slurm.script import JobRequest
from tests.unit.test_cli_run import _hpcorch


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process whose pid a stale journal or lock file may name."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def _running_run(run_dir: Path, driver_pid: int) -> None:
    with Journal.create(
        run_dir, run_id="r1", name="demo", source=None, site="local", time_scale=None
    ) as j:
        j.add_tasks([("a", "command", "pending", 0), ("b", "command", "succeeded", 0)])
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    conn.execute("UPDATE runs SET driver_pid = ?, state = 'running'", (driver_pid,))
    conn.commit()
    conn.close()


def _record(lock: DriverLock, pid: int, start: int | None) -> None:
    """Make the held lock's record name ``pid`` with ``start`` (what a holder wrote)."""
    assert lock._fd is not None
    os.ftruncate(lock._fd, 0)
    record = {"host": os.uname()[1], "pid": pid, "start": start, "since": 0}
    os.pwrite(lock._fd, json.dumps(record).encode(), 0)


def test_a_second_driver_is_refused_and_told_who_holds_the_run(tmp_path: Path) -> None:
    with DriverLock.acquire(tmp_path / "run"):
        with pytest.raises(RunLocked) as refused:
            DriverLock.acquire(tmp_path / "run")
        message = str(refused.value)
        assert f"pid {os.getpid()} on {os.uname()[1]}" in message and "since" in message
        assert RunLocked.exit_code == 2
    DriverLock.acquire(tmp_path / "run").release()  # free again once released


def test_lock_file_is_private_and_not_inherited(tmp_path: Path) -> None:
    lock = DriverLock.acquire(tmp_path / "run")
    try:
        path = tmp_path / "run" / LOCK_NAME
        assert path.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700
        # a child (a worker, a task) never holds it: the driver's death frees the run
        assert lock._fd is not None and not os.get_inheritable(lock._fd)
    finally:
        lock.release()


def test_live_driver_names_the_holder_or_hands_over_the_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with DriverLock.acquire(run_dir):
        holder, lock = live_driver(run_dir)
        assert lock is None and holder is not None
        assert holder.pid == os.getpid() and holder_alive(holder)
    holder, lock = live_driver(run_dir)
    assert holder is None and lock is not None
    with pytest.raises(RunLocked):  # cancel holds it while it marks the journal
        DriverLock.acquire(run_dir)
    lock.release()


def test_holder_with_another_start_time_is_not_alive(stranger: subprocess.Popen[bytes]) -> None:
    ticks = start_ticks(stranger.pid)
    assert ticks is not None
    assert holder_alive(Holder("h", stranger.pid, ticks, 0.0))
    assert not holder_alive(Holder("h", stranger.pid, ticks + 1, 0.0))
    assert not holder_alive(Holder("h", stranger.pid, None, 0.0))


def test_cancel_after_a_crash_never_signals_the_journals_stale_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stranger: subprocess.Popen[bytes]
) -> None:
    run_dir = tmp_path / "run"
    _running_run(run_dir, stranger.pid)
    # the crashed driver's lock file names the stranger's pid too, but nobody holds the lock
    (run_dir / LOCK_NAME).write_text(
        json.dumps({"host": os.uname()[1], "pid": stranger.pid, "start": 1, "since": 0})
    )
    assert _hpcorch(monkeypatch, "cancel", str(run_dir)) == 0
    assert stranger.poll() is None, "cancel killed a process that was not the driver"
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    assert conn.execute("SELECT state FROM runs").fetchone() == ("cancelled",)
    assert dict(conn.execute("SELECT task_id, state FROM tasks").fetchall()) == {
        "a": "cancelled",
        "b": "succeeded",
    }


def test_cancel_refuses_a_locked_run_whose_recorded_pid_was_reused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stranger: subprocess.Popen[bytes],
) -> None:
    run_dir = tmp_path / "run"
    _running_run(run_dir, stranger.pid)
    with DriverLock.acquire(run_dir) as lock:
        # the holder's record names the stranger, with another start time (a reused pid)
        _record(lock, stranger.pid, 1)
        assert _hpcorch(monkeypatch, "cancel", str(run_dir)) == 2
    err = capsys.readouterr().err.strip()
    assert "nothing was signalled" in err and "\n" not in err and "Traceback" not in err
    assert stranger.poll() is None


def test_cancel_of_another_users_driver_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stranger: subprocess.Popen[bytes],
) -> None:
    run_dir = tmp_path / "run"
    _running_run(run_dir, stranger.pid)

    def refused(fd: int, signum: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(signal, "pidfd_send_signal", refused)
    with DriverLock.acquire(run_dir) as lock:
        _record(lock, stranger.pid, start_ticks(stranger.pid))
        assert _hpcorch(monkeypatch, "cancel", str(run_dir)) == 2
    err = capsys.readouterr().err.strip()
    assert "belongs to another user" in err and "\n" not in err and "Traceback" not in err
    assert stranger.poll() is None


def test_cancel_signals_the_live_driver_that_holds_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real driver: a process that takes the lock, then marks the run on SIGTERM."""
    run_dir = tmp_path / "run"
    _running_run(run_dir, 0)
    code = f"""
import signal, sqlite3, sys, time
from pathlib import Path
from hpcorch.engine import session
from hpcorch.engine.driverlock import DriverLock
lock = DriverLock.acquire(Path({str(run_dir)!r}))
def stop(*_):
    c = sqlite3.connect({str(run_dir / "journal.sqlite")!r})
    c.execute("UPDATE runs SET state='cancelled'")
    c.commit()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("locked", flush=True)
time.sleep(60)
"""
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "locked"
        assert _hpcorch(monkeypatch, "cancel", str(run_dir)) == 0
        assert driver.wait(timeout=30) == 0
    finally:
        driver.kill()


def test_a_requeued_driver_job_keeps_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Between a driver job's requeue and its restart no process holds the lock: the record
    says whose run it is, so a manual resume is refused and cancel also cancels that job."""
    fake = FakeSlurm(nodes={"cpu1": "cpu"})
    job = fake.client().submit(JobRequest(command="true"))
    monkeypatch.setattr(cancel, "connect", lambda site: fake.client())
    run_dir = tmp_path / "run"
    _running_run(run_dir, 0)
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    conn.execute("UPDATE runs SET site = 'dev'")
    conn.commit()
    conn.close()
    monkeypatch.setenv("SLURM_JOB_ID", job)
    DriverLock.acquire(run_dir).release(requeued=True)  # what a SIGUSR1'd driver job does
    monkeypatch.delenv("SLURM_JOB_ID")
    assert _hpcorch(monkeypatch, "resume", str(run_dir)) == 2
    err = capsys.readouterr().err.strip()
    assert f"driver job {job}, requeued" in err and "\n" not in err
    # the requeued job itself takes its run back
    monkeypatch.setenv("SLURM_JOB_ID", job)
    lock = DriverLock.acquire(run_dir)
    assert lock.previous is not None and lock.previous.job_id == job
    session._refuse_if_requeued(lock, "dev")
    lock.release(requeued=True)
    monkeypatch.delenv("SLURM_JOB_ID")
    assert _hpcorch(monkeypatch, "cancel", str(run_dir)) == 0
    assert fake.client().jobs([job])[0].terminal  # it will not come back to resume

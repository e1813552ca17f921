"""One driver per run: an advisory lock on the run directory, held for the driver's life.

``run`` and ``resume`` take the lock (:meth:`DriverLock.acquire`) before they
write anything and hold it until the driver exits; the kernel releases it when
the process dies, however it dies, so a crashed driver never leaves a stale
lock. A second driver is refused with exit 2 and a line naming the holder.

The lock file records who holds it: host, pid, the pid's start time (clock
ticks since boot, from ``/proc/<pid>/stat``) and since when. ``cancel``
signals a driver only when the lock is held *and* that pid still has that
start time (:func:`live_driver`), so a recycled pid is never signalled.

The descriptor is close-on-exec (Python's default), so worker and task
processes never inherit the lock and cannot keep it held after the driver died.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcorch.errors import JournalError, RunLocked
from hpcorch.guardian import start_ticks

__all__ = ["LOCK_NAME", "DriverLock", "Holder", "holder_alive", "live_driver"]

logger = logging.getLogger(__name__)

LOCK_NAME = "driver.lock"


@dataclass(frozen=True, slots=True)
class Holder:
    """The driver that holds a run's lock, as it recorded itself."""

    host: str
    pid: int
    start: int | None
    since: float
    job_id: str | None = None
    requeued: bool = False
    """Let go by a driver job about to be requeued: the run is still that job's."""

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            data: Any = json.loads(text)
            return cls(
                host=str(data["host"]),
                pid=int(data["pid"]),
                start=None if data.get("start") is None else int(data["start"]),
                since=float(data["since"]),
                job_id=None if data.get("job_id") is None else str(data["job_id"]),
                requeued=bool(data.get("requeued", False)),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        job = f", Slurm job {self.job_id}" if self.job_id else ""
        return f"pid {self.pid} on {self.host}{job}, since {since}"

    def is_this_host(self) -> bool:
        return self.host == socket.gethostname()


def _open(run_dir: Path, *, write: bool) -> int:
    path = run_dir / LOCK_NAME
    flags = (os.O_RDWR | os.O_CREAT) if write else os.O_RDONLY
    try:
        return os.open(path, flags | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        what = "write to" if write else "read"
        raise JournalError(
            f"cannot {what} {path}: {exc.strerror}; run hpcorch as the user who owns "
            f"{run_dir}, on a writable file system"
        ) from None


def _read_holder(fd: int) -> Holder | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return Holder.parse(os.read(fd, 4096).decode(errors="replace"))
    except OSError:
        return None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class DriverLock:
    """The run directory's lock, held by this process until :meth:`release`."""

    def __init__(self, run_dir: Path, fd: int, previous: Holder | None = None) -> None:
        self.run_dir = run_dir
        self._fd: int | None = fd
        self.previous = previous
        """The driver before this one, when it handed the run over (:meth:`release`)."""
        self._previous_text = b""

    @classmethod
    def acquire(cls, run_dir: Path) -> DriverLock:
        """Take the lock of ``run_dir`` (created 0700 if missing) or raise :class:`RunLocked`."""
        try:
            run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise JournalError(
                f"cannot create the run directory {run_dir}: {exc.strerror}"
            ) from None
        fd = _open(run_dir, write=True)
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            who = holder.describe() if holder else "another process"
            raise RunLocked(
                f"run directory {run_dir} is in use by its driver ({who}); "
                "wait for it, or stop it with 'hpcorch cancel'"
            )
        previous = _read_holder(fd)
        previous_text = os.pread(fd, 4096, 0) if previous and previous.requeued else b""
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": start_ticks(os.getpid()),
            "since": time.time(),
            # a driver job (hpcorch submit) names itself, so that its requeued self is known
            "job_id": os.environ.get("SLURM_JOB_ID"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise JournalError(
                f"cannot write {run_dir / LOCK_NAME}: {exc.strerror}; is the disk full?"
            ) from None
        lock = cls(run_dir, fd, previous if previous and previous.requeued else None)
        lock._previous_text = previous_text
        return lock

    def release(self, *, requeued: bool = False) -> None:
        """Let go of the run; ``requeued``: this driver job comes back (Slurm requeued it),
        so the record stays, marked, for the next driver to see (:attr:`previous`)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError, ValueError):
            if requeued:
                record = json.loads(os.pread(fd, 4096, 0) or b"{}")
                record["requeued"] = True
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(record).encode(), 0)
            else:
                os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock

    def give_back(self) -> None:
        """Let go without having driven: the record of the driver before stays as it was."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._previous_text, 0)
        os.close(fd)

    def __enter__(self) -> DriverLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def live_driver(run_dir: Path) -> tuple[Holder | None, DriverLock | None]:
    """Who drives ``run_dir`` now: ``(holder, None)`` while a driver holds the lock, else
    ``(None, lock)`` with the lock now held by the caller (release it when done).

    A run directory written before runs had a lock has no driver this can find.
    """
    if not (run_dir / LOCK_NAME).exists():
        return None, None
    fd = _open(run_dir, write=False)  # flock needs no write access: a reader can cancel
    if _try_lock(fd):
        previous = _read_holder(fd)
        return None, DriverLock(run_dir, fd, previous if previous and previous.requeued else None)
    holder = _read_holder(fd)
    os.close(fd)
    if holder is None:
        raise RunLocked(
            f"run directory {run_dir} is locked by a process that did not say who it is; "
            f"see 'fuser {run_dir / LOCK_NAME}'"
        )
    return holder, None


def holder_alive(holder: Holder) -> bool:
    """Whether ``holder``'s pid on this host is still the process that took the lock."""
    return holder.start is not None and start_ticks(holder.pid) == holder.start

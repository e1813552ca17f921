"""No task outlives its attempt: each command runs in its own session, and its group and
every process a task started are ended on cancel, on timeout and when the worker dies.

- :func:`tracked` wraps a command task's process (started with ``start_new_session``):
  its process group is known to this worker and to the worker's guardian for as
  long as the task runs, and what is left of the group when the command ends is killed.
- :func:`end_tasks` (the driver calls it on every worker when the run is
  cancelled, :meth:`hpcorch.engine.runner.Engine.cancel`) ends every tracked group
  and every other process this worker started (a function task's children), and
  no attempt of that run starts there afterwards (:func:`refuse_cancelled`).
- :class:`TaskReaper`, a worker plugin every worker source registers, starts the
  worker's guardian (:mod:`hpcorch.guardian`, which ends them all should the worker
  die without warning), ends them when the worker closes, and removes secrets from
  the worker's own environment (:mod:`hpcorch.childenv`) before any task runs there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

import psutil  # type: ignore[import-untyped]  # a dependency of distributed
from distributed import WorkerPlugin

from hpcorch.childenv import is_secret
from hpcorch.guardian import end_groups, end_processes, start_ticks

__all__ = [
    "PLUGIN_NAME",
    "TaskReaper",
    "end_attempts",
    "end_tasks",
    "refuse_cancelled",
    "tracked",
]

logger = logging.getLogger(__name__)

PLUGIN_NAME = "hpcorch-reaper"
_SNAPSHOT_S = 1.0


class _Guard:
    """This worker's side of the guardian: the groups it runs, the line to the guardian."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.groups: dict[int, str] = {}  # pgid -> run id
        self.attempts: dict[int, tuple[str, str, int]] = {}  # pgid -> (run, task, attempt n)
        self.stdin: IO[bytes] | None = None
        self.pid: int | None = None

    def start(self) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpcorch.guardian"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.stdin, self.pid = proc.stdin, proc.pid

    def send(self, line: str) -> None:
        with self.lock:
            if self.stdin is None:
                return
            try:
                self.stdin.write(line.encode() + b"\n")
                self.stdin.flush()
            except OSError:
                self.stdin = None

    def stop(self) -> None:
        with self.lock:
            stdin, self.stdin = self.stdin, None
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()


_GUARD = _Guard()
_CANCELLED: set[str] = set()  # runs whose attempts this worker no longer starts


def refuse_cancelled(run_id: str) -> None:
    """Raise instead of starting an attempt of a run that was cancelled on this worker."""
    if run_id in _CANCELLED:
        raise RuntimeError(f"run {run_id} was cancelled; the attempt did not start")


@contextlib.contextmanager
def tracked(
    proc: subprocess.Popen[Any], run_id: str, attempt: tuple[str, int] | None = None
) -> Iterator[None]:
    """Know ``proc``'s process group (it leads its own session) while the task runs.

    ``attempt`` (task id, attempt number) lets :func:`end_attempts` end this one alone."""
    pgid = proc.pid
    with _GUARD.lock:
        _GUARD.groups[pgid] = run_id
        if attempt is not None:
            _GUARD.attempts[pgid] = (run_id, *attempt)
    _GUARD.send(f"g {pgid}")
    try:
        yield
    finally:
        # What the command left behind in its group ends with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with _GUARD.lock:
            _GUARD.groups.pop(pgid, None)
            _GUARD.attempts.pop(pgid, None)
        _GUARD.send(f"u {pgid}")


def _descendants() -> list[tuple[int, int]]:
    """This process's descendants but the guardian, as ``(pid, start ticks)``."""
    out = []
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    for child in children:
        if child.pid == _GUARD.pid:
            continue
        start = start_ticks(child.pid)
        if start is not None:
            out.append((child.pid, start))
    return out


def end_tasks(run_id: str | None = None) -> int:
    """End the processes of ``run_id``'s tasks on this worker (all tasks' when None).

    A worker serves one run, so the processes its function tasks started go too.
    Returns how many process groups and processes were signalled.
    """
    if run_id is not None:
        _CANCELLED.add(run_id)  # before the processes go, so that none starts meanwhile
    with _GUARD.lock:
        groups = [g for g, r in _GUARD.groups.items() if run_id is None or r == run_id]
    others = _descendants()
    end_groups(groups)
    end_processes(others)
    return len(groups) + len(others)


def end_attempts(run_id: str, attempts: list[tuple[str, int]]) -> int:
    """End the command processes of these attempts (task id, n) of ``run_id`` on this worker.

    For attempts the driver lost with its connection to the scheduler: distributed
    cannot stop the worker thread that runs them, so their processes would go on beside
    the attempt the driver resubmits. A function task's thread cannot be ended: it runs
    to its end and its value is dropped. Returns how many process groups were signalled.
    """
    wanted = {(run_id, task_id, n) for task_id, n in attempts}
    with _GUARD.lock:
        groups = [g for g, a in _GUARD.attempts.items() if a in wanted]
    end_groups(groups)
    return len(groups)


def _scrub_environ(extra: tuple[str, ...]) -> None:
    for name in [n for n in os.environ if is_secret(n, extra)]:
        del os.environ[name]


class TaskReaper(WorkerPlugin):
    """On each worker: no secret in its environment, a guardian for its tasks' processes."""

    name = PLUGIN_NAME

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self.secrets = secrets  # what is pickled to the workers: names only

    def setup(self, worker: Any) -> None:
        self._stop = threading.Event()
        _scrub_environ(self.secrets)
        if _GUARD.pid is None:
            try:
                _GUARD.start()
            except OSError as exc:
                logger.warning("cannot start the task guardian: %s", exc)
                return
            # A group of its own: what function tasks start stays in it, so the guardian
            # can end it all at once, even what started a moment before the worker died.
            try:
                os.setpgid(0, 0)
                _GUARD.send(f"w {os.getpgid(0)}")
            except OSError as exc:
                logger.debug("worker keeps its process group: %s", exc)
        thread = threading.Thread(target=self._snapshots, name="hpcorch-reaper", daemon=True)
        thread.start()

    def _snapshots(self) -> None:
        """Keep the guardian's list of this worker's other descendants current."""
        last: list[tuple[int, int]] = []
        while not self._stop.wait(_SNAPSHOT_S):
            now = _descendants()
            if now != last:
                _GUARD.send("s " + " ".join(f"{pid}:{start}" for pid, start in now))
                last = now

    def teardown(self, worker: Any) -> None:
        self._stop.set()
        end_tasks()
        _GUARD.stop()
        _GUARD.pid = None

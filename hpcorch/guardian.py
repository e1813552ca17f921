"""The guardian of a worker's task processes: ends them when the worker dies.

A Dask worker may die without running any clean-up of its own: its parent
(the driver of a ``local`` run, or a nanny) going away makes it call
``os._exit``, and the kernel's OOM killer or ``kill -9`` give it no chance.
Its tasks' processes would then live on, re-parented to init. So each worker
starts one guardian (``python -m hpcorch.guardian``, stdlib only) and tells it,
over the guardian's stdin, what to end:

    w PGID         the worker's own process group (what its function tasks start joins it)
    g PGID         a task's process group started (each task runs in its own session)
    u PGID         that group ended
    s PID:START …  the worker's descendants now (those that left its group included)

When stdin reaches its end (the worker exited, however it exited), the guardian
sends SIGTERM to every group and process it was told of, then SIGKILL to those
still there after a grace period, and exits. A process is matched by its start
time as well as its pid, so a pid the kernel gave to a newcomer is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["end_groups", "end_processes", "main", "start_ticks"]

GRACE_S = 2.0


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of proc(5), counted from field 3
    except (IndexError, ValueError):
        return None


def _signal_groups(pgids: Iterable[int], signum: int) -> list[int]:
    alive = []
    for pgid in pgids:
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            continue
        alive.append(pgid)
    return alive


def _signal_processes(procs: Iterable[tuple[int, int]], signum: int) -> list[tuple[int, int]]:
    alive = []
    for pid, start in procs:
        if start_ticks(pid) != start:  # gone, or the pid now names another process
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
            alive.append((pid, start))
    return alive


def end_groups(pgids: Iterable[int], grace_s: float = GRACE_S) -> None:
    """SIGTERM each process group, then SIGKILL what is left after ``grace_s``."""
    alive = _signal_groups(pgids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = _signal_groups(alive, 0)
    _signal_groups(alive, signal.SIGKILL)


def end_processes(procs: Iterable[tuple[int, int]], grace_s: float = GRACE_S) -> None:
    """SIGTERM each ``(pid, start ticks)``, then SIGKILL those left after ``grace_s``."""
    alive = _signal_processes(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [(pid, start) for pid, start in alive if start_ticks(pid) == start]
    _signal_processes(alive, signal.SIGKILL)


def _parse_snapshot(words: list[str]) -> set[tuple[int, int]]:
    out = set()
    for word in words:
        pid, _, start = word.partition(":")
        if pid.isdigit() and start.isdigit():
            out.add((int(pid), int(start)))
    return out


def main() -> None:
    # The worker's group may be signalled as a whole (Ctrl-C, scancel): outlive it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: set[int] = set()
    others: set[tuple[int, int]] = set()
    for line in sys.stdin:
        op, *words = line.split()
        if op in ("g", "w"):
            groups.update(int(w) for w in words if w.isdigit())
        elif op == "u":
            groups.difference_update(int(w) for w in words if w.isdigit())
        elif op == "s":
            others = _parse_snapshot(words)
    end_groups(groups)
    end_processes(others)


if __name__ == "__main__":
    main()

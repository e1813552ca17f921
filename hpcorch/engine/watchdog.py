"""Enforce a command task's memory and walltime on the worker: watch its process tree.

Slurm enforces memory per job, and a whole-node job hosts many tasks, so a
task that uses more than it asked for would only be stopped once the whole
node ran out. :func:`wait` samples the resident memory of the command and all
its children (psutil, a dependency of distributed) every ``interval_s`` and
kills the tree when it exceeds the request, or when the walltime has passed.
The peak it saw is the evidence the recovery needs to size the retry.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import psutil  # type: ignore[import-untyped]  # a dependency of distributed

__all__ = ["Ended", "wait"]


@dataclass(frozen=True, slots=True)
class Ended:
    returncode: int
    timed_out: bool = False
    over_memory: bool = False
    memory_peak: int | None = None
    """Peak resident bytes of the process tree (None when memory was not watched)."""


def _tree(pid: int) -> list[Any]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _rss(procs: list[Any]) -> int:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def _kill(procs: list[Any]) -> None:
    for proc in reversed(procs):  # children first, so none is re-parented and missed
        try:
            proc.kill()
        except psutil.Error:
            continue
    if procs:
        # The command leads its own session (provision.reaper): its group holds the rest,
        # even what left the tree (a daemonized child re-parented to init).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(procs[0].pid) == procs[0].pid:
                os.killpg(procs[0].pid, signal.SIGKILL)


def wait(
    proc: subprocess.Popen[bytes],
    *,
    timeout: float | None = None,
    memory_limit: int = 0,
    interval_s: float = 0.1,
) -> Ended:
    """Wait for ``proc``; kill its tree past ``timeout`` seconds or above ``memory_limit`` bytes."""
    if not memory_limit:
        try:
            return Ended(proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            _kill(_tree(proc.pid))
            return Ended(proc.wait(), timed_out=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    peak = 0
    while True:
        procs = _tree(proc.pid)
        rss = _rss(procs)
        peak = max(peak, rss)
        if rss > memory_limit:
            _kill(procs)
            return Ended(proc.wait(), over_memory=True, memory_peak=peak)
        step = interval_s if deadline is None else min(interval_s, deadline - time.monotonic())
        try:
            return Ended(proc.wait(timeout=max(step, 0.0)), memory_peak=peak)
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                _kill(_tree(proc.pid))
                return Ended(proc.wait(), timed_out=True, memory_peak=peak)

"""Wait for a state, never for a time: the one bounded poll the tests share.

Slurm answers from two places that lag each other: slurmctld (squeue, sinfo,
scontrol, slurmrestd) knows a job at once, slurmdbd (sacct) only once
slurmctld's agent has sent it the record, and a dev cluster started afresh
numbers its jobs from 1 again while its database keeps the old ones, so
``sacct -j ID`` may answer with an older job of that id for a moment. A test
that reads either right after an event (a submit, a cancel, a node failure, a
run's end) polls for the state it needs with :func:`wait_for`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.5) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Fails after ``timeout`` seconds with a message naming ``what`` was awaited and
    the last value seen. ``predicate`` is always called at least once, and once
    more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; last seen: {value!r}"
            )
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))

"""The log of a task's last attempt, whatever its number.

A run that loses its client's scheduler connection resubmits the attempts in
flight (failure class ``scheduler_connection_lost``), so a task that succeeded
may have done so in attempt 2: tests that check what a task printed read its
final attempt's log, not ``TASK.1.out`` by name.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["final_log"]


def final_log(run_dir: Path, task: str, stream: str = "out") -> str:
    """Text of ``run_dir/logs/TASK.N.STREAM`` for the highest attempt ``N``."""
    pattern = re.compile(rf"{re.escape(task)}\.(\d+)\.{re.escape(stream)}")
    found = {
        int(m.group(1)): path
        for path in (run_dir / "logs").iterdir()
        if (m := pattern.fullmatch(path.name))
    }
    assert found, f"no {stream} log of task {task!r} in {run_dir / 'logs'}"
    return found[max(found)].read_text()

"""Microsoft Philly GPU jobs as subset by the Pollux artifact.

Columns ``timestamp,duration,num_gpus,gpu_time,cluster``; the timestamp is a
UTC wall-clock string (``2017-10-09 07:01:55``), the rest seconds and counts.
The file is not sorted by time; sort the records when replaying.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import NamedTuple

from hpcorch.traces._paths import open_text

__all__ = ["PhillyJob", "read_philly"]


class PhillyJob(NamedTuple):
    submit: float
    duration: float
    gpus: int
    gpu_time: float
    cluster: str


def read_philly(path: str | os.PathLike[str]) -> Iterator[PhillyJob]:
    """Yield jobs in file order; rows without a timestamp are skipped."""
    with open_text(path) as fh:
        for row in csv.DictReader(fh):
            stamp = (row.get("timestamp") or "").strip()
            if not stamp:
                continue
            submit = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            yield PhillyJob(
                submit.timestamp(),
                float(row["duration"]),
                int(float(row["num_gpus"])),
                float(row["gpu_time"] or 0.0),
                row.get("cluster") or "",
            )
